"""Class maps: which dataset category a model class is (a COCO checkpoint scored on VOC, say), and the
guardrail that notices when nothing says so.

A map is given as ``coco-voc`` (built in: the 20 VOC classes and their COCO ids) or as a JSON file, an
object ``{model class: dataset category}`` whose keys are model class ids (``"5"``) or names
(``"airplane"``) and whose values are dataset category ids (``0``) or names (``"aeroplane"``). Names are
resolved against the model's class names (an official 91-class checkpoint: :data:`COCO_CLASSES`) and the
dataset's category names. :func:`resolve_class_map` turns it into :class:`ResolvedClassMap`: model class id
-> dataset category id, one-to-one. Predictions of unmapped classes are dropped from scoring.

Every problem (not JSON, not an object, unknown name, id out of range, duplicate key or target) is one
:class:`ClassMapError` line naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detr_core.data.ids import ascii_int, class_id_problem
from detr_core.input_files import read_regular_text

#: The 91 class names of the official DETR COCO checkpoints, by model class id ("N/A": id unused by COCO).
COCO_CLASSES: tuple[str, ...] = (
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
    "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A",
    "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

#: ``coco-voc``: VOC class name -> (COCO class name, COCO id), in VOC's standard order.
COCO_VOC: dict[str, tuple[str, int]] = {
    "aeroplane": ("airplane", 5), "bicycle": ("bicycle", 2), "bird": ("bird", 16), "boat": ("boat", 9),
    "bottle": ("bottle", 44), "bus": ("bus", 6), "car": ("car", 3), "cat": ("cat", 17), "chair": ("chair", 62),
    "cow": ("cow", 21), "diningtable": ("dining table", 67), "dog": ("dog", 18), "horse": ("horse", 19),
    "motorbike": ("motorcycle", 4), "person": ("person", 1), "pottedplant": ("potted plant", 64),
    "sheep": ("sheep", 20), "sofa": ("couch", 63), "train": ("train", 7), "tvmonitor": ("tv", 72),
}  # fmt: skip

BUILT_IN = ("coco-voc",)
UNUSED = "N/A"


class ClassMapError(ValueError):
    """A class map that cannot be read or does not fit the model / dataset; one line naming it."""


@dataclass(frozen=True)
class ClassMapSpec:
    """A map as given, before resolution: ``pairs`` of (model id or name, dataset id or name)."""

    name: str
    pairs: tuple[tuple[int | str, int | str], ...]


@dataclass(frozen=True)
class ResolvedClassMap:
    """``model_to_data``: model class id -> dataset category id (one-to-one); ``data_names`` by dataset id."""

    name: str
    model_to_data: dict[int, int]
    data_names: dict[int, str]

    def lookup(self, num_model_classes: int) -> Tensor:
        """int64 [num_model_classes + 1]: the dataset id of each model class, -1 where unmapped (and for
        the no-object index)."""
        table = torch.full((num_model_classes + 1,), -1, dtype=torch.int64)
        for model_id, data_id in self.model_to_data.items():
            table[model_id] = data_id
        return table

    def remap_labels(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``labels`` [N] model ids -> (keep [N] bool, dataset ids [N] where kept, -1 elsewhere)."""
        size = max(int(labels.max()) + 1 if labels.numel() else 0, max(self.model_to_data, default=0) + 1)
        mapped = self.lookup(size)[labels.long().clamp(min=0)]
        return mapped >= 0, mapped

    def inverse(self) -> dict[int, int]:
        """Dataset category id -> model class id."""
        return {d: m for m, d in self.model_to_data.items()}


def _no_duplicate_keys(source: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ClassMapError(f"{source}: duplicate key {key!r}")
            seen.add(key)
        return dict(pairs)

    return hook


def _key(value: Any, where: str) -> int | str:
    """A map entry side: an int id in 0..:data:`MAX_CLASS_ID` (ASCII digit strings too) or a name; anything else
    is refused here, for every command alike (a negative or huge id once passed ``predict`` as "outside the
    map" or built a names table of its size)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ClassMapError(f"{where}: {value!r:.40} is neither a class id nor a class name")
    if isinstance(value, str) and (number := ascii_int(value)) is not None:
        value = number
    if isinstance(value, int) and (problem := class_id_problem(value)):
        raise ClassMapError(f"{where}: class id {problem}")
    return value


def read_class_map(spec: str) -> ClassMapSpec:
    """``coco-voc`` or the path of a JSON object ``{model class: dataset category}`` (ids or names)."""
    if spec == "coco-voc":
        return ClassMapSpec(spec, tuple((coco_id, voc) for voc, (_, coco_id) in COCO_VOC.items()))
    path = Path(spec)
    if not path.is_file():
        raise ClassMapError(f"--class-map {spec}: neither a built-in map ({', '.join(BUILT_IN)}) nor a JSON file")
    try:
        data = json.loads(read_regular_text(path), object_pairs_hook=_no_duplicate_keys(spec))
    except OSError as exc:
        raise ClassMapError(f"--class-map {spec}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassMapError(f"{spec}: class map is not JSON ({exc})") from None
    except RecursionError:
        raise ClassMapError(f"{spec}: not a readable JSON file (nested too deeply)") from None
    if not isinstance(data, dict) or not data:
        raise ClassMapError(f"{spec}: class map must be a non-empty JSON object {{model class: dataset category}}")
    return ClassMapSpec(spec, tuple((_key(k, spec), _key(v, f"{spec}: key {k!r}")) for k, v in data.items()))


def _model_id(key: int | str, names: Sequence[str], num_classes: int, source: str) -> int:
    if isinstance(key, int):
        if not 0 <= key < num_classes:
            raise ClassMapError(f"{source}: model class id {key} is out of range (the model has ids 0..{num_classes - 1})")
        return key
    matches = [i for i, n in enumerate(names) if n == key and n != UNUSED]
    if not matches:
        raise ClassMapError(f"{source}: unknown model class name {key!r} (the model's classes: "
                            f"{_preview([n for n in names if n != UNUSED])})")
    return matches[0]


def _data_id(value: int | str, data_names: Mapping[int, str], source: str) -> int:
    if isinstance(value, int):
        if value not in data_names:
            raise ClassMapError(f"{source}: dataset category id {value} is out of range (the dataset's ids: "
                                f"{_preview(sorted(data_names))})")
        return value
    matches = [i for i, n in data_names.items() if n == value]
    if not matches:
        raise ClassMapError(f"{source}: unknown dataset category name {value!r} (the dataset's categories: "
                            f"{_preview(list(data_names.values()))})")
    return matches[0]


def _preview(items: Sequence[Any], count: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:count])
    return shown + (f", ... ({len(items)} in all)" if len(items) > count else "")


def _one_to_one(pairs: list[tuple[int, int]], source: str) -> dict[int, int]:
    out: dict[int, int] = {}
    targets: dict[int, int] = {}
    for model_id, data_id in pairs:
        if model_id in out:
            raise ClassMapError(f"{source}: duplicate model class {model_id} (mapped twice)")
        if data_id in targets:
            raise ClassMapError(f"{source}: duplicate dataset category {data_id} (model classes {targets[data_id]} "
                                f"and {model_id} both map to it)")
        out[model_id], targets[data_id] = data_id, model_id
    return out


def resolve_class_map(spec: ClassMapSpec, *, model_names: Sequence[str], num_model_classes: int,
                      data_names: Mapping[int, str] | None) -> ResolvedClassMap:
    """Resolve ``spec`` against the model (names by id, ``num_model_classes``) and the dataset's categories
    (``{id: name}``; None when there is no dataset, as in ``predict``: dataset names then take ids in the
    order the map lists them, which for ``coco-voc`` is detrtool's VOC ids 0..19)."""
    if data_names is None:
        data_names = _names_from_spec(spec)
    names = model_names_or_coco(model_names, num_model_classes)
    pairs = [(_model_id(m, names, num_model_classes, spec.name), _data_id(d, data_names, spec.name))
             for m, d in spec.pairs]
    mapping = _one_to_one(pairs, spec.name)
    return ResolvedClassMap(spec.name, mapping, {d: data_names[d] for d in mapping.values()})


def _names_from_spec(spec: ClassMapSpec) -> dict[int, str]:
    ids = [d for _, d in spec.pairs if isinstance(d, int)]
    names = [d for _, d in spec.pairs if isinstance(d, str)]
    out = {i: str(i) for i in ids}
    free = (i for i in range(len(spec.pairs) + max(ids, default=0) + 1) if i not in out)
    for name in dict.fromkeys(names):
        out[next(free)] = name
    return out


def model_names_or_coco(names: Sequence[str], num_classes: int) -> list[str]:
    """The model's class names; a model without names and 91 classes (an official checkpoint) gets
    :data:`COCO_CLASSES`; otherwise ids as strings."""
    if names and len(names) == num_classes:
        return list(names)
    if num_classes == len(COCO_CLASSES):
        return list(COCO_CLASSES)
    return [str(i) for i in range(num_classes)]


def load_class_map(spec: str, *, model_names: Sequence[str], num_model_classes: int,
                   data_names: Mapping[int, str] | None) -> ResolvedClassMap:
    """:func:`read_class_map` then :func:`resolve_class_map`."""
    return resolve_class_map(read_class_map(spec), model_names=model_names, num_model_classes=num_model_classes,
                             data_names=data_names)


def data_names_of(class_names: Sequence[str]) -> dict[int, str]:
    """A dataset's ``{category id: name}`` from its names-by-id list (``"N/A"`` entries are unused ids)."""
    return {i: n for i, n in enumerate(class_names) if n != UNUSED}


# --------------------------------------------------------------------------------------------- guardrail
def _norm(name: str) -> str:
    return "".join(name.lower().split())


def name_mismatches(model_names: Sequence[str], data_names: Mapping[int, str]) -> list[tuple[int, str, str]]:
    """``(id, model name, dataset name)`` for every id both sides name, where the names differ."""
    return [(i, model_names[i], name) for i, name in sorted(data_names.items())
            if 0 <= i < len(model_names) and model_names[i] != UNUSED and _norm(model_names[i]) != _norm(name)]


def suggested_map(model_names: Sequence[str], data_names: Mapping[int, str]) -> str:
    """The ``--class-map`` that would fix a mismatch: ``coco-voc`` when it fits, else a JSON file."""
    if list(model_names) == list(COCO_CLASSES) and set(COCO_VOC) >= {_norm(n) for n in data_names.values()}:
        return "--class-map coco-voc"
    return "--class-map FILE.json ({\"model class id or name\": dataset category id or name, ...})"


def mismatch_warning(model_names: Sequence[str], num_model_classes: int, data_names: Mapping[int, str],
                     *, shown: int = 4) -> str | None:
    """The guardrail's one warning line, or None when the names agree on every shared id (or either side
    has no names to compare)."""
    names = model_names_or_coco(model_names, num_model_classes)
    if all(n.isdigit() for n in names):
        return None
    bad = name_mismatches(names, data_names)
    if not bad:
        return None
    shared = sum(1 for i in data_names if 0 <= i < len(names) and names[i] != UNUSED)
    first = ", ".join(f"{i}: model {m!r} vs dataset {d!r}" for i, m, d in bad[:shown])
    return (f"the checkpoint's classes and the dataset's categories disagree on {len(bad)} of the {shared} ids "
            f"they share ({first}{', ...' if len(bad) > shown else ''}): the scores would compare different "
            f"classes; {suggested_map(names, data_names)} maps them")
