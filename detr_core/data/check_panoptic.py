"""``data check`` for COCO panoptic: every image, every PNG (decoded one at a time) and every segment.

:func:`check_coco_panoptic` reports ALL problems, one line each naming the file and the image / segment id
(the loader, :class:`~detr_core.data.coco_panoptic.CocoPanoptic`, stops at the first):

- **errors** — the loader would refuse or training would be wrong: the refusals of
  :func:`~detr_core.data.coco_panoptic.load_panoptic_json` (every annotation's and every segment's: unknown
  image or category, duplicate or zero segment id, ``segments_info`` not a list), malformed or duplicate
  ``images`` / ``categories`` entries (a category id outside 0..65535, an ``isthing`` other than 0/1), two
  annotations of one image (the loader refuses it), a
  ``file_name`` leaving its folder, a missing / unreadable / non-RGB PNG, a PNG whose size differs from its
  image's, a missing or unreadable image, a listed segment with no pixel in the PNG, an ``iscrowd`` other than
  0/1, a non-numeric ``area``, category ids that do not fit ``num_classes``.
- **warnings** — counted in ``fixups``: an image without an annotation (no targets), PNG ids that
  ``segments_info`` does not list (void), a JSON ``bbox`` more than 1 px from its mask's tight box (the loader
  uses the mask's), a JSON ``area`` other than the pixel count (it becomes the target ``area``), a category
  without ``isthing`` (read as a thing); crowd segments (left out of training targets) are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detr_core.data.check import (
    FIX_CROWD,
    Report,
    _check_image_file,
    _image_file,
    _size_in_json,
    validate_num_classes,
)
from detr_core.data.coco import DatasetError, read_coco_json
from detr_core.data.coco_panoptic import (
    _annotation_problem,
    _repeat_problem,
    _segment_problem,
    category_problems,
    load_panoptic_json,
    read_panoptic_png,
)
from detr_core.data.integrity import bbox_is_four_numbers, duplicate_id_problems, shape_problems

__all__ = ["FIX_AREA", "FIX_BBOX", "FIX_ISTHING", "FIX_NO_ANNOTATION", "FIX_VOID", "check_coco_panoptic",
           "segment_stats"]
FIX_NO_ANNOTATION = "image without a panoptic annotation: no targets"
FIX_VOID = "PNG ids not in segments_info read as void"
FIX_BBOX = "JSON bbox differs from the mask's tight box (the mask's is used)"
FIX_AREA = "JSON area differs from the pixel count (the JSON's is the target area)"
FIX_ISTHING = "category without 'isthing' read as a thing"
_BBOX_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class _Files:
    """Where one split's files are, and whether a ``file_name`` may leave its folder."""

    ann: Path
    images: Path
    pngs: Path
    allow_outside: bool


@dataclass(frozen=True)
class _Annotation:
    """One image's annotation: its PNG ``file_name``, the ids the PNG may use (every listed one) and the
    segments that passed the JSON checks (the ones checked against the pixels)."""

    file_name: str
    listed: frozenset[int]
    segments: tuple[dict[str, Any], ...]


def segment_stats(ids: np.ndarray) -> dict[int, tuple[int, tuple[int, int, int, int]]]:
    """``{segment id: (pixel count, tight box x1, y1, x2, y2)}`` of every id in ``ids`` int64 [H, W] (0 too);
    boxes in pixel edges (``x2`` = last column + 1, as :func:`~detr_core.data.coco_panoptic.masks_to_xyxy`).

    Reduced over the rows' runs of equal ids (a panoptic PNG has few: its segments are regions), so the cost
    is one pass over the pixels plus the runs, whatever the number of segments."""
    h, w = ids.shape
    starts = np.ones((h, w), dtype=bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    ys, xs = np.nonzero(starts)  # row-major: a run ends where the next one of its row starts, else at w
    ends = np.append(np.where(ys[1:] == ys[:-1], xs[1:], w), w)
    uniq, inverse = np.unique(ids[ys, xs], return_inverse=True)
    counts = np.bincount(inverse, weights=ends - xs, minlength=len(uniq))
    x1, y1 = np.full(len(uniq), w), np.full(len(uniq), h)
    x2, y2 = np.zeros(len(uniq), dtype=np.int64), np.zeros(len(uniq), dtype=np.int64)
    np.minimum.at(x1, inverse, xs)
    np.minimum.at(y1, inverse, ys)
    np.maximum.at(x2, inverse, ends)
    np.maximum.at(y2, inverse, ys + 1)
    return {int(i): (int(n), (int(a), int(b), int(c), int(d)))
            for i, n, a, b, c, d in zip(uniq, counts, x1, y1, x2, y2, strict=True)}


def _scannable(data: dict[str, Any] | None) -> bool:
    """The top level every per-annotation check needs (``load_panoptic_json``'s first refusals)."""
    if data is None or not all(isinstance(data.get(k), list) for k in ("annotations", "categories")):
        return False
    return all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in data["categories"])


def _load(report: Report, ann_path: Path) -> dict[str, Any] | None:
    """The JSON when its top level can be checked entry by entry; its refusal recorded otherwise."""
    try:
        return _entries_checked(report, ann_path, load_panoptic_json(ann_path))
    except DatasetError as exc:
        refusal = str(exc)
    try:
        data = read_coco_json(ann_path)
    except DatasetError:
        data = None
    if not _scannable(data):
        report.errors.append(refusal)
        return None
    return _entries_checked(report, ann_path, data)  # per-annotation refusals: each recorded by the scan


def _entries_checked(report: Report, ann_path: Path, data: dict[str, Any]) -> dict[str, Any] | None:
    """``images`` and ``categories`` entries as COCO's (integer ids, ``file_name``, no duplicate id)."""
    lists = {"images": data["images"], "categories": data["categories"]}
    problems = shape_problems(lists)
    more = [] if problems else duplicate_id_problems(lists) + category_problems(data["categories"])
    report.errors += [f"{ann_path}: {p}" for p in problems + more]
    if not data["images"]:
        report.errors.append(f"{ann_path}: no images (the 'images' list is empty)")
    return None if problems else data


def _segment_problems(segments: list[Any], categories: set[int]) -> tuple[list[str], list[dict[str, Any]]]:
    """(every segment's problem, the segments without one)."""
    seen: set[int] = set()
    problems, kept = [], []
    for seg in segments:
        problem = _segment_problem(seg, categories, seen)
        problems += [problem] if problem else []
        kept += [] if problem else [seg]
    return problems, kept


def _scan_annotation(report: Report, ann_path: Path, ann: Any, images: set[int],
                     categories: set[int]) -> _Annotation | None:
    """One annotation, every problem recorded (``load_panoptic_json`` stops at its first); None when it cannot
    be tied to an image's PNG."""
    segments = ann.get("segments_info") if isinstance(ann, dict) else None
    head = _annotation_problem({**ann, "segments_info": []} if isinstance(segments, list) else ann, images,
                               categories)
    if head:
        report.errors.append(f"{ann_path}: {head}")
        return None
    problems, kept = _segment_problems(segments, categories)  # type: ignore[arg-type]
    report.errors += [f"{ann_path}: image {ann['image_id']}: {p}" for p in problems]
    report.num_annotations += len(segments)  # type: ignore[arg-type]
    listed = frozenset(s["id"] for s in segments if isinstance(s, dict) and isinstance(s.get("id"), int))  # type: ignore[union-attr]
    return _Annotation(ann["file_name"], listed, tuple(kept))


def _scan_annotations(report: Report, ann_path: Path, data: dict[str, Any]) -> dict[int, _Annotation]:
    """``{image id: annotation}`` of the annotations tied to an image; two for one image is an error."""
    images = {i["id"] for i in data["images"]}
    categories = {c["id"] for c in data["categories"]}
    by_image: dict[int, _Annotation] = {}
    annotated: dict[int, str] = {}
    for ann in data["annotations"]:
        scanned = _scan_annotation(report, ann_path, ann, images, categories)
        if scanned is None:
            continue
        if problem := _repeat_problem(ann, annotated):
            report.errors.append(f"{ann_path}: {problem}")
        by_image[ann["image_id"]] = scanned
    return by_image


def _check_categories(report: Report, ann_path: Path, categories: list[dict[str, Any]],
                      num_classes: int | None) -> dict[int, str]:
    """``{id: name}``; a category without ``isthing`` is a warning, ids not fitting ``num_classes`` an error."""
    for cat in categories:
        if "isthing" not in cat:
            report.warn(FIX_ISTHING, f"{ann_path}: category {cat['id']} ({cat.get('name')!r}) has no 'isthing'")
    if num_classes is not None:
        try:
            validate_num_classes({"categories": categories}, num_classes)
        except ValueError as exc:
            report.errors.append(f"{ann_path}: {exc}")
    return {c["id"]: str(c.get("name", c["id"])) for c in categories}


def _bbox_warning(seg: dict[str, Any], box: tuple[int, int, int, int]) -> str | None:
    """Why the JSON ``bbox`` [x, y, w, h] disagrees with the tight box ``box`` (x1, y1, x2, y2); None if it
    agrees within 1 px or is absent."""
    bbox = seg.get("bbox")
    if bbox is None:
        return None
    tight = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    if not bbox_is_four_numbers(bbox) or None in bbox:
        return f"bbox {bbox!r} is not four numbers [x, y, w, h] (the mask's is {tight})"
    x, y, w, h = (float(v) for v in bbox)
    gap = max(abs(a - b) for a, b in zip((x, y, x + w, y + h), box, strict=True))
    return f"bbox {bbox} is {gap:g} px from the mask's tight box {tight}" if gap > _BBOX_TOLERANCE_PX else None


def _check_segment(report: Report, what: str, seg: dict[str, Any], stats: tuple[int, tuple[int, int, int, int]],
                   name: str) -> None:
    """One listed segment that has pixels: its JSON ``bbox`` and ``area`` against them, counted per class."""
    count, box = stats
    if problem := _bbox_warning(seg, box):
        report.warn(FIX_BBOX, f"{what}: {problem}")
    if "area" in seg and seg["area"] != count:
        report.warn(FIX_AREA, f"{what}: area {seg['area']} but {count} pixel(s)")
    if seg.get("iscrowd", 0):
        report.fixups[FIX_CROWD] += 1
    else:
        report.boxes_per_class[name] += 1


def _check_pixels(report: Report, png: Path, image_id: int, ann: _Annotation, ids: np.ndarray,
                  names: dict[int, str]) -> None:
    """Every kept segment against the PNG's ids [H, W]; PNG ids nobody lists are void."""
    stats = segment_stats(ids)
    for seg in ann.segments:
        what = f"{png}: image {image_id} segment {seg['id']}"
        if seg["id"] not in stats:
            report.errors.append(f"{what}: listed in segments_info but has no pixel in the PNG")
            continue
        _check_segment(report, what, seg, stats[seg["id"]], names[seg["category_id"]])
    unlisted = sorted(set(stats) - ann.listed - {0})
    if unlisted:
        more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        report.warn(FIX_VOID, f"{png}: image {image_id}: segment id(s) {unlisted[:5]}{more} not in segments_info")


def _check_png(report: Report, files: _Files, info: dict[str, Any], ann: _Annotation,
               hw: tuple[int, int] | None, names: dict[int, str]) -> None:
    """Decode one image's PNG (one at a time: memory stays at one PNG) and check it against its image."""
    where = f"{files.ann}: image {info['id']}"
    png = _image_file(report, {"file_name": ann.file_name}, files.pngs, where, files.allow_outside)
    if png is None:
        return
    try:
        ids = read_panoptic_png(png)
    except DatasetError as exc:
        report.errors.append(f"image {info['id']}: {exc}")
        return
    if hw and tuple(ids.shape) != tuple(hw):
        report.errors.append(f"{png}: image {info['id']}: panoptic PNG is {ids.shape[0]}x{ids.shape[1]} (HxW) but "
                             f"its image {info['file_name']!r} is {hw[0]}x{hw[1]}")
    _check_pixels(report, png, info["id"], ann, ids, names)


def _check_image(report: Report, files: _Files, info: dict[str, Any], ann: _Annotation | None,
                 names: dict[int, str]) -> None:
    """One image: its file (decoded, as training would), then its PNG and segments."""
    where = f"{files.ann}: image {info['id']}"
    path = _image_file(report, info, files.images, where, files.allow_outside)
    hw = path and _check_image_file(report, path, f"image {info['id']}", _size_in_json(info))
    if ann is None:
        report.warn(FIX_NO_ANNOTATION, f"{where} ({info['file_name']!r})")
        return
    _check_png(report, files, info, ann, hw, names)


def check_coco_panoptic(ann_path: str | Path, images_dir: str | Path, png_dir: str | Path,
                        num_classes: int | None = None, *, progress: bool = False,
                        allow_outside_images: bool = False) -> Report:
    """Check a COCO panoptic split: the JSON, every image (decoded) and every PNG (decoded one at a time,
    each segment against its pixels); see the module docstring for what is an error and what a warning.

    ``allow_outside_images``: a ``file_name`` leaving its folder is a warning, not an error."""
    files = _Files(Path(ann_path), Path(images_dir), Path(png_dir), allow_outside_images)
    report = Report(source=f"{files.ann} (images in {files.images}, PNGs in {files.pngs})")
    data = _load(report, files.ann)
    if data is None:
        return report
    names = _check_categories(report, files.ann, data["categories"], num_classes)
    anns = _scan_annotations(report, files.ann, data)
    report.num_images = len(data["images"])
    for info in tqdm(data["images"], desc="check panoptic", disable=not progress, leave=False):
        _check_image(report, files, info, anns.get(info["id"]), names)
    return report
