"""YOLO-format datasets (Roboflow, ultralytics exports): ``data.yaml`` + image folders + ``labels/*.txt``.

Layout (ultralytics' convention)::

    ROOT/data.yaml            names: [cat, dog] or {0: cat, 1: dog}; train: images/train; val: images/val
                              (paths relative to ``path:`` when given, else to the yaml's folder)
    ROOT/images/val/a.jpg     an image
    ROOT/labels/val/a.txt     one line per object: ``class cx cy w h`` (floats in [0, 1] of the image size)

The label file of an image is its path with the last ``images`` folder replaced by ``labels`` and the
suffix by ``.txt``. Category ids are the YOLO class ids (``num_classes = max id + 1``; ``names[id]``).

Rules, shared by the loader, ``yolo2coco`` and ``data check`` (:func:`scan_split`):

- errors (:class:`DatasetError`, one line naming the file and line): an unreadable ``data.yaml`` or one
  without ``names``/the split, a missing images folder, a malformed line (not 5 numbers, a class that is
  not an integer), a class id outside ``names``;
- fix-ups (counted): a missing label file or an empty one is an image with no objects; boxes go through
  :func:`detr_core.data.box_rules.inspect_xyxy` (NaN/inf or zero-size dropped, out of the image clipped).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors

from detr_core.atomic import atomic_write
from detr_core.config import read_yaml_file
from detr_core.data.box_rules import inspect_xyxy
from detr_core.data.coco import DatasetError, Transforms, finalize_sample, load_rgb_image, load_rgb_tensor
from detr_core.data.ids import class_id_problem
from detr_core.data.image_cache import ImageCache
from detr_core.input_files import NOT_REGULAR, NotRegularFileError, check_regular, read_regular_text

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FIX_NO_LABEL_FILE = "image without a label file read as having no objects"
FIX_EMPTY_LABEL_FILE = "empty label file read as an image with no objects"


@dataclass(frozen=True)
class YoloLayout:
    """A parsed ``data.yaml``: the yaml's path, class names by id (``"N/A"`` for gaps) and split folders."""

    yaml_path: Path
    names: tuple[str, ...]
    splits: dict[str, Path]

    def images_dir(self, split: str) -> Path:
        if split not in self.splits:
            raise DatasetError(f"{self.yaml_path}: no {split!r} entry (splits given: {', '.join(self.splits) or 'none'})")
        folder = self.splits[split]
        if not folder.is_dir():
            raise DatasetError(f"{self.yaml_path}: the {split} images folder {folder} does not exist")
        return folder


@dataclass(frozen=True)
class YoloObject:
    """One label line: class id and normalised ``cx, cy, w, h``; ``line`` is its 1-based line number."""

    label: int
    cxcywh: tuple[float, float, float, float]
    line: int

    def xyxy(self, h: int, w: int) -> tuple[float, float, float, float]:
        """Pixel-edge ``x1, y1, x2, y2`` in an image of ``h`` x ``w``."""
        cx, cy, bw, bh = self.cxcywh
        return (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h


@dataclass
class YoloImage:
    """An image, its label file and its objects; ``fixups`` names what the reader assumed."""

    path: Path
    label_path: Path
    objects: list[YoloObject] = field(default_factory=list)
    fixups: list[str] = field(default_factory=list)


def _names(raw: Any, yaml_path: Path) -> tuple[str, ...]:
    if isinstance(raw, list) and raw and all(isinstance(n, (str, int)) for n in raw):
        return tuple(str(n) for n in raw)
    if isinstance(raw, dict) and raw and all(isinstance(k, int) and k >= 0 for k in raw):
        if problem := next((class_id_problem(k) for k in raw if class_id_problem(k)), None):
            raise DatasetError(f"{yaml_path}: 'names': class id {problem}")
        names = ["N/A"] * (max(raw) + 1)
        for k, v in raw.items():
            names[k] = str(v)
        return tuple(names)
    raise DatasetError(f"{yaml_path}: 'names' must be a non-empty list of class names or a mapping "
                       f"{{id: name}} with integer ids >= 0, got {raw!r}")


def _yaml_file(root: str | Path) -> Path:
    root = Path(root)
    path = root / "data.yaml" if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(f"{root}: no data.yaml (a YOLO dataset folder holds data.yaml, images/ and labels/)")
    return path


def read_data_yaml(root: str | Path) -> YoloLayout:
    """Parse ``ROOT/data.yaml`` (or the yaml file ``root``); :class:`DatasetError` naming it on any problem."""
    path = _yaml_file(root)
    data = read_yaml_file(path, error=DatasetError)
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{path}: not a YOLO data.yaml (no 'names' entry)")
    names = _names(data["names"], path)
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{path}: nc {data['nc']!r} differs from the {len(names)} names")
    base = path.parent / str(data.get("path") or ".")
    splits = {}
    for split in ("train", "val"):
        entry = data.get(split)
        if entry is not None:
            if not isinstance(entry, str) or entry.endswith(".txt"):
                raise DatasetError(f"{path}: {split} must be one images folder, got {entry!r} (lists are not read)")
            splits[split] = (base / entry).resolve() if not Path(entry).is_absolute() else Path(entry)
    return YoloLayout(path, names, splits)


def label_path_of(image: Path) -> Path:
    """ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def list_images(folder: Path) -> list[Path]:
    """Entries with an image suffix under ``folder`` (recursively; folders left out), sorted by their path
    relative to it. A fifo, a device or a broken link with an image name is listed, not skipped in silence:
    reading it is then refused naming it."""
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()),
                  key=lambda p: p.relative_to(folder).as_posix())


def parse_label_line(text: str, where: str, num_classes: int, line: int) -> YoloObject:
    fields_ = text.split()
    if len(fields_) != 5:
        raise DatasetError(f"{where}: line {line}: {text.strip()!r} is not 'class cx cy w h' (5 numbers)")
    try:
        values = [float(v) for v in fields_]
    except ValueError:
        raise DatasetError(f"{where}: line {line}: {text.strip()!r} holds a non-number") from None
    label = values[0]
    if not math.isfinite(label) or label != int(label):
        raise DatasetError(f"{where}: line {line}: class {fields_[0]!r} is not an integer")
    if not 0 <= int(label) < num_classes:
        raise DatasetError(f"{where}: line {line}: class {int(label)} is out of range (data.yaml names "
                           f"{num_classes} classes: 0..{num_classes - 1})")
    return YoloObject(int(label), tuple(values[1:]), line)  # type: ignore[arg-type]


def read_labels(image: Path, num_classes: int) -> YoloImage:
    """The image's objects; a missing or empty label file is an image with no objects (a fix-up)."""
    label_path = label_path_of(image)
    item = YoloImage(image, label_path)
    try:
        text = read_regular_text(label_path)
    except FileNotFoundError:
        item.fixups.append(FIX_NO_LABEL_FILE)
        return item
    except NotRegularFileError:
        raise DatasetError(f"{label_path}: label file is {NOT_REGULAR}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{label_path}: label file is not readable text ({exc})") from None
    if not text.strip():
        item.fixups.append(FIX_EMPTY_LABEL_FILE)
        return item
    item.objects = [parse_label_line(t, str(label_path), num_classes, n)
                    for n, t in enumerate(text.splitlines(), 1) if t.strip()]
    return item


def scan_split(layout: YoloLayout, split: str) -> list[YoloImage]:
    """Every image of ``split`` with its labels (errors raised as :class:`DatasetError`)."""
    return [read_labels(p, len(layout.names)) for p in list_images(layout.images_dir(split))]


class YoloDetection(torch.utils.data.Dataset):
    """A YOLO split. ``ds[i] -> (image float32 [3, H, W], target)`` with the COCO dataset's target layout
    (``boxes`` normalised cx,cy,w,h; ``labels`` int64 class ids; ``image_id`` = index + 1 in sorted file
    order; ``area``; ``iscrowd`` zeros; ``orig_size``; ``size``). Labels are read and checked up front."""

    def __init__(self, root: str | Path, *, split: str = "train", transforms: Transforms | None = None,
                 cache_images: bool = False) -> None:
        self.layout = read_data_yaml(root)
        self.split = split
        self.items = scan_split(self.layout, split)
        self.transforms = transforms
        self.images = ImageCache(load_rgb_tensor, enabled=cache_images)
        self.class_names = list(self.layout.names)
        self.num_classes = len(self.class_names)
        self.images_dir = self.layout.images_dir(split)

    @property
    def category_ids(self) -> list[int]:
        return [i for i, n in enumerate(self.class_names) if n != "N/A"]

    def __len__(self) -> int:
        return len(self.items)

    def _target(self, item: YoloImage, index: int, h: int, w: int) -> dict[str, Any]:
        xyxy = torch.tensor([o.xyxy(h, w) for o in item.objects], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([o.label for o in item.objects], dtype=torch.int64),
            "image_id": torch.tensor(index + 1, dtype=torch.int64),
            "area": (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]),
            "iscrowd": torch.zeros(len(item.objects), dtype=torch.int64),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        item = self.items[index]
        image = self.images.load(item.path)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        return finalize_sample(image, self._target(item, index, h, w), self.transforms)


def image_hw(path: Path) -> tuple[int, int]:
    """(height, width) of an image as the loader sees it (EXIF rotations by 90 degrees swap them), read from
    its header; :class:`DatasetError` when it is not a readable image."""
    try:
        with PIL.Image.open(check_regular(path)) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except (OSError, SyntaxError, ValueError):
        load_rgb_image(path)  # raises the loader's one-line DatasetError for this file
        raise
    return (w, h) if turned else (h, w)


def yolo_to_coco(root: str | Path, split: str, out: str | Path | None = None) -> dict[str, Any]:
    """A YOLO split as a standard COCO dict (written to ``out`` atomically when given).

    Image ids are the dataset's (index + 1), ``file_name`` is relative to the split's images folder,
    category ids are the class ids with their names; boxes are ``x = (cx - w/2) * W`` ... in pixels after
    the loader's box rule (dropped / clipped boxes counted as one WARNING each kind, and recorded in
    ``info["detrtool_fixups"]`` with the label-file fix-ups)."""
    from detr_core.data.voc import FixupLog

    layout = read_data_yaml(root)
    folder = layout.images_dir(split)
    images, anns, fixups = [], [], FixupLog()
    for index, item in enumerate(scan_split(layout, split)):
        h, w = image_hw(item.path)
        images.append({"id": index + 1, "file_name": item.path.relative_to(folder).as_posix(), "height": h, "width": w})
        for fix in item.fixups:
            fixups.add(fix, str(item.label_path))
        for obj in item.objects:
            verdict = inspect_xyxy(obj.xyxy(h, w), (h, w))
            for fix, detail in verdict.fixups:
                fixups.add(fix, f"{item.label_path} line {obj.line}: {detail}")
            if verdict.box is not None:
                x1, y1, x2, y2 = verdict.box
                anns.append({"id": len(anns) + 1, "image_id": index + 1, "category_id": obj.label,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    fixups.log(f"yolo2coco {layout.yaml_path} {split}")
    cats = [{"id": i, "name": n} for i, n in enumerate(layout.names) if n != "N/A"]
    coco = {"info": {"description": f"{layout.yaml_path} {split} converted by detrtool",
                     "detrtool_fixups": fixups.counts}, "licenses": [], "images": images, "annotations": anns,
            "categories": cats}
    if out is not None:
        atomic_write(out, lambda handle: json.dump(coco, handle), binary=False)
        logger.info("yolo2coco: %d images, %d boxes -> %s", len(images), len(anns), out)
    return coco


def yolo_inputs(inputs: tuple[str, ...] | list[str]) -> list[str]:
    """Image inputs with each YOLO dataset folder (one holding ``data.yaml``) replaced by its ``val`` images
    folder (its ``train`` one when it has no ``val``)."""
    out = []
    for item in inputs:
        if not (Path(item) / "data.yaml").is_file():
            out.append(item)
            continue
        layout = read_data_yaml(item)
        out.append(str(layout.images_dir("val" if "val" in layout.splits else "train")))
    return out
