"""Whole-file rules of a COCO annotation dict, shared by the loader (which refuses) and ``data check``
(which reports), so both say the same thing about the same file.

Every function returns problems as one-line strings (no file name: the caller prefixes it):

- :func:`shape_problems` — what would make any reader crash: ``images`` / ``annotations`` /
  ``categories`` not lists of objects, an image without an integer ``id`` or a ``file_name`` string,
  an annotation without integer ``id`` / ``image_id`` / ``category_id``, a category without an integer ``id``,
  an id beyond int64 (named, instead of an overflow deep in a reader), an annotation whose ``iscrowd`` is
  not 0 or 1.
- :func:`duplicate_id_problems` — two entries of one list sharing an id, naming both (index, id and the
  image's ``file_name`` / category's ``name``): pycocotools keeps the last silently, so one image's pixels
  would be scored against another's ground truth.
- :func:`reference_problems` — counted: annotations whose ``image_id`` is not in ``images``, whose
  ``category_id`` is not in ``categories``, whose ``bbox`` is not four numbers.
- :func:`outside_reason` — why a ``file_name`` would leave the images folder (an absolute path elsewhere,
  or ``..`` that climbs out of it), read lexically: symlinks inside the folder are the user's own layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from detr_core.data.ids import class_id_problem

_LISTS = ("images", "annotations", "categories")
_INT_KEYS = {"images": ("id",), "annotations": ("id", "image_id", "category_id"), "categories": ("id",)}
_ENTRY_NAME = {"images": "file_name", "categories": "name", "annotations": "image_id"}
_SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}


_INT64 = (-(2**63), 2**63 - 1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_problem(value: Any) -> str | None:
    if not _is_int(value):
        return "not an integer"
    if not _INT64[0] <= value <= _INT64[1]:
        return "beyond int64 (ids are stored as 64-bit integers)"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _entry_problem(kind: str, index: int, entry: Any, need_file_name: bool) -> str | None:
    if not isinstance(entry, dict):
        return f"{kind}[{index}] is not an object ({type(entry).__name__})"
    for key in _INT_KEYS[kind]:
        if problem := _int_problem(entry.get(key)):
            return f"{kind}[{index}]: {key!r} is {_short(entry.get(key))}, {problem}"
    if kind == "categories" and (problem := class_id_problem(entry["id"])):
        return f"{kind}[{index}]: category id {problem}"
    if kind == "images" and (problem := _image_size_problem(entry)):
        return f"{kind}[{index}] (id {entry['id']}): {problem}"
    if kind == "images" and need_file_name and not isinstance(entry.get("file_name"), str):
        return f"{kind}[{index}] (id {entry['id']}): 'file_name' is {entry.get('file_name')!r}, not a string"
    if kind == "annotations" and _crowd_flag(entry) is None:
        return f"{kind}[{index}] (id {entry['id']}): 'iscrowd' is {_short(entry['iscrowd'])}, not 0 or 1"
    return None


_MAX_PIXELS_SIDE = 2**31 - 1


def _image_size_problem(entry: dict[str, Any]) -> str | None:
    """A ``height`` / ``width`` that is given but not a whole number of pixels 0..2**31 - 1 (absent, null or 0:
    not given, nothing to check). ``"48"``, ``48.5`` or ``-48`` once skipped the size check in silence (the
    boxes then landed in another frame) and ``1e400`` was an ``OverflowError``."""
    for key in ("height", "width"):
        value = entry.get(key)
        if value is not None and not (_is_int(value) and 0 <= value <= _MAX_PIXELS_SIDE):
            return f"{key!r} is {_short(value)}, not a whole number of pixels 0..{_MAX_PIXELS_SIDE}"
    return None


def _crowd_flag(annotation: dict[str, Any]) -> int | None:
    """``iscrowd`` as 0 or 1 (absent: 0); None for anything else ("yes", 2, 0.5)."""
    value = annotation.get("iscrowd", 0)
    return int(value) if _is_int(value) and value in (0, 1) else None


def shape_problems(data: dict[str, Any], *, need_file_name: bool = True) -> list[str]:
    """Problems that stop any reader (see the module docstring); [] when the file has COCO's shape.
    ``need_file_name=False``: ground truth for scoring only, where images need no file."""
    problems = []
    for kind in _LISTS:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            problems.append(f"{kind!r} is not a list ({type(entries).__name__})")
            continue
        problems += [p for i, e in enumerate(entries) if (p := _entry_problem(kind, i, e, need_file_name))]
    return problems


def duplicate_id_problems(data: dict[str, Any]) -> list[str]:
    """One line per repeated id, naming both entries, e.g. ``duplicate image id 2: images[1] ('a.png') and
    images[4] ('b.png')``. Call it on a file without :func:`shape_problems`."""
    problems = []
    for kind in _LISTS:
        first: dict[int, int] = {}
        entries = data.get(kind, [])
        for index, entry in enumerate(entries):
            earlier = first.setdefault(entry["id"], index)
            if earlier != index:
                label = _ENTRY_NAME[kind]
                problems.append(f"duplicate {_SINGULAR[kind]} id {entry['id']}: {kind}[{earlier}] ({label} "
                                f"{entries[earlier].get(label)!r}) and {kind}[{index}] ({label} {entry.get(label)!r})")
    return problems


def bbox_is_four_numbers(bbox: Any) -> bool:
    """True for a list of four numbers (JSON ``null`` counts: it becomes NaN and the box is dropped)."""
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return False
    return all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in bbox)


def _counted(anns: list[dict[str, Any]], bad: Callable[[dict[str, Any]], bool], what: str,
             first: Callable[[dict[str, Any]], str]) -> list[str]:
    hits = [a for a in anns if bad(a)]
    if not hits:
        return []
    return [f"{len(hits)} annotation(s) {what} (first: annotation {hits[0]['id']} {first(hits[0])})"]


def reference_problems(data: dict[str, Any]) -> list[str]:
    """Counted lines for annotations pointing at missing images or categories, or with a malformed bbox.
    Call it on a file without :func:`shape_problems`."""
    anns = data.get("annotations", [])
    image_ids = {image["id"] for image in data.get("images", [])}
    category_ids = {category["id"] for category in data.get("categories", [])}
    return (
        _counted(anns, lambda a: a["image_id"] not in image_ids, "reference image ids not in images[]",
                 lambda a: f"-> image {a['image_id']}")
        + _counted(anns, lambda a: a["category_id"] not in category_ids,
                   "reference category ids not in categories[]", lambda a: f"-> category {a['category_id']}")
        + _counted(anns, lambda a: not bbox_is_four_numbers(a.get("bbox")), "have a bbox that is not four "
                   "numbers [x, y, w, h]", lambda a: f"bbox {a.get('bbox')!r}")
    )


def outside_reason(file_name: str, images_dir: str | os.PathLike[str]) -> str | None:
    """Why ``file_name`` leaves ``images_dir`` (an absolute path elsewhere, or ``..`` climbing out of it),
    or None when it stays inside; lexical (``os.path.normpath``), symlinks are not followed."""
    folder = os.path.abspath(images_dir)
    target = os.path.normpath(os.path.join(folder, file_name))
    if os.path.commonpath([folder, target]) == folder:
        return None
    return "is an absolute path" if PurePath(file_name).is_absolute() else "climbs out through '..'"
