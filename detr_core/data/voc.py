"""Pascal VOC (VOCdevkit/VOC2007, VOC2012) reader and VOC → COCO JSON conversion.

Box convention (documented, tested): VOC ``<bndbox>`` coordinates are 1-based *inclusive pixel indices*
(``xmin=1`` is the first column, ``xmax`` the last column covered). They become continuous 0-based
pixel-edge coordinates, as in Detectron/torchvision::

    COCO x = xmin - 1,  y = ymin - 1,  w = xmax - xmin + 1,  h = ymax - ymin + 1
    (XYXY: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax)

Labels are indices into :data:`VOC_CLASSES` (the 20 classes in their standard order) plus
``category_id_offset`` (0 → ids 0..19, num_classes 20; 1 → ids 1..20, num_classes 21). ``difficult``
objects are kept and flagged in the target's ``difficult`` bool tensor unless ``remove_difficult``; a
``<difficult>`` other than 0 or 1 is an error naming the XML and the object. A ``<size>`` that disagrees with
the image is an error (at load; voc2coco reads the image's header, decoding nothing).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from detr_core.atomic import atomic_write
from detr_core.data.box_rules import inspect_xyxy
from detr_core.data.coco import (
    DatasetError,
    Transforms,
    check_size_agrees,
    finalize_sample,
    image_path,
    load_rgb_tensor,
)
from detr_core.data.ids import ascii_int
from detr_core.data.image_cache import ImageCache
from detr_core.input_files import (
    NOT_REGULAR,
    NotRegularFileError,
    check_regular,
    read_regular_bytes,
    read_regular_text,
)

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: class name, difficult flag, VOC 1-based inclusive box (xmin, ymin, xmax, ymax)."""

    name: str
    difficult: bool
    box: tuple[float, float, float, float]

    def coco_xywh(self) -> list[float]:
        """COCO ``[x, y, w, h]`` (0-based pixel edges) — see the module docstring."""
        xmin, ymin, xmax, ymax = self.box
        return [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]


@dataclass(frozen=True)
class VocRecord:
    """A parsed annotation XML: file name, (height, width) from ``<size>`` and the objects."""

    stem: str
    filename: str
    size: tuple[int, int]
    objects: tuple[VocObject, ...]


def resolve_voc_dir(root: str | Path, year: str = "2007") -> Path:
    """``root`` may be ``VOCdevkit`` (holding ``VOC{year}``) or the ``VOC{year}`` folder itself."""
    root = Path(root)
    for candidate in (root / f"VOC{year}", root):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise DatasetError(f"{root}: no VOC{year}/Annotations folder (expected a VOCdevkit or VOC{year} folder)")


def read_split(voc_dir: Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/{split}.txt``."""
    path = voc_dir / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: split file is missing (splits: {', '.join(VOC_SPLITS)})")
    return [line.split()[0] for line in read_regular_text(path).splitlines() if line.strip()]


def _number(node: ET.Element, tag: str, xml_path: Path) -> float:
    text = node.findtext(tag)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{xml_path}: <{tag}> is missing or not a number ({text!r})") from None


def _pixels(node: ET.Element, tag: str, xml_path: Path) -> int:
    """A ``<size>`` entry: a whole number of pixels 0..2**31 - 1 (``inf``, ``nan``, ``1e40`` or ``12.5`` is
    one line naming the file and the tag, not an int() error)."""
    value = _number(node, tag, xml_path)
    if not (math.isfinite(value) and value == int(value) and 0 <= value < 2**31):
        raise DatasetError(f"{xml_path}: <{tag}> is {node.findtext(tag)!r}, not a whole number of pixels "
                           f"0..{2**31 - 1}")
    return int(value)


def _parse_object(node: ET.Element, xml_path: Path, index: int) -> VocObject:
    name = (node.findtext("name") or "").strip()
    box_node = node.find("bndbox")
    if box_node is None:
        raise DatasetError(f"{xml_path}: object {name!r} has no <bndbox>")
    box = tuple(_number(box_node, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
    difficult = (node.findtext("difficult") or "0").strip()
    if difficult not in ("0", "1"):
        raise DatasetError(f"{xml_path}: object {index} ({name!r}): <difficult> is {difficult!r}, not 0 or 1")
    return VocObject(name, difficult == "1", box)  # type: ignore[arg-type]


def parse_voc_xml(xml_path: str | Path) -> VocRecord:
    """Parse one ``Annotations/*.xml``; :class:`DatasetError` naming the file on any problem."""
    xml_path = Path(xml_path)
    try:
        root = ET.fromstring(read_regular_bytes(xml_path))
    except FileNotFoundError:
        raise DatasetError(f"{xml_path}: annotation file is missing") from None
    except NotRegularFileError:
        raise DatasetError(f"{xml_path}: annotation file is {NOT_REGULAR}") from None
    except OSError as exc:
        raise DatasetError(f"{xml_path}: annotation file is not readable ({exc.strerror or exc})") from None
    except ET.ParseError as exc:
        raise DatasetError(f"{xml_path}: malformed XML ({exc})") from None
    size = root.find("size")
    hw = (_pixels(size, "height", xml_path), _pixels(size, "width", xml_path)) if size is not None else (0, 0)
    filename = (root.findtext("filename") or f"{xml_path.stem}.jpg").strip()
    objects = tuple(_parse_object(node, xml_path, i) for i, node in enumerate(root.findall("object")))
    return VocRecord(xml_path.stem, filename, hw, objects)


def voc_image_id(stem: str, index: int) -> int:
    """Integer image id: the digits of the VOC id (``2008_000123`` → 2008000123), else ``index + 1``."""
    digits = stem.replace("_", "")
    number = ascii_int(digits)
    return number if number is not None else index + 1


def header_size(path: Path) -> tuple[int, int] | None:
    """(H, W) of an image file from its header (nothing decoded; EXIF orientation applied as the loader does),
    None when the file is missing; :class:`DatasetError` for a file PIL cannot identify."""
    try:
        with PIL.Image.open(check_regular(path)) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError:
        return None
    except NotRegularFileError:
        raise DatasetError(f"{path}: image is {NOT_REGULAR}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _with_header_size(record: VocRecord, path: Path, xml_path: Path) -> VocRecord:
    """``record`` checked against its image's header: a disagreeing ``<size>`` is a :class:`DatasetError`, a
    missing one is filled in; a missing image leaves the record as it is (``data check`` reports it)."""
    actual = header_size(path)
    if actual is None:
        return record
    check_size_agrees(record.size, actual, what=f"{xml_path}: <size>", image=path)
    return dataclasses.replace(record, size=actual)


def _label(name: str, xml_path: Path, offset: int) -> int:
    if name not in VOC_CLASSES:
        raise DatasetError(f"{xml_path}: unknown VOC class {name!r}")
    return VOC_CLASSES.index(name) + offset


class VocDetection(torch.utils.data.Dataset):
    """VOCdevkit dataset. ``ds[i] -> (image float32 [3, H, W], target)`` with the COCO dataset's target
    layout (``boxes`` normalised cx,cy,w,h; ``labels`` int64; ``image_id``; ``area``; ``iscrowd`` zeros;
    ``orig_size``; ``size``) plus ``difficult`` bool [N]."""

    def __init__(self, root: str | Path, *, year: str = "2007", split: str = "train",
                 transforms: Transforms | None = None, remove_difficult: bool = False,
                 category_id_offset: int = 0, cache_images: bool = False, allow_outside_images: bool = False) -> None:
        self.voc_dir = resolve_voc_dir(root, year)
        self.allow_outside_images = allow_outside_images
        self.images = ImageCache(load_rgb_tensor, enabled=cache_images)
        self.split = split
        self.stems = read_split(self.voc_dir, split)
        self.transforms = transforms
        self.remove_difficult = remove_difficult
        self.offset = category_id_offset
        self.num_classes = len(VOC_CLASSES) + category_id_offset
        self.class_names = ["N/A"] * category_id_offset + list(VOC_CLASSES)

    @property
    def category_ids(self) -> list[int]:
        return list(range(self.offset, self.num_classes))

    def __len__(self) -> int:
        return len(self.stems)

    def _target(self, record: VocRecord, index: int, h: int, w: int, xml_path: Path) -> dict[str, Any]:
        objs = [o for o in record.objects if not (self.remove_difficult and o.difficult)]
        xywh = torch.tensor([o.coco_xywh() for o in objs], dtype=torch.float32).reshape(-1, 4)
        boxes = tv_tensors.BoundingBoxes(xywh, format="XYWH", canvas_size=(h, w))
        return {
            "boxes": F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY),
            "labels": torch.tensor([_label(o.name, xml_path, self.offset) for o in objs], dtype=torch.int64),
            "image_id": torch.tensor(voc_image_id(record.stem, index), dtype=torch.int64),
            "area": xywh[:, 2] * xywh[:, 3],
            "iscrowd": torch.zeros(len(objs), dtype=torch.int64),
            "difficult": torch.tensor([o.difficult for o in objs], dtype=torch.bool),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        stem = self.stems[index]
        xml_path = self.voc_dir / "Annotations" / f"{stem}.xml"
        record = parse_voc_xml(xml_path)
        path = image_path(self.voc_dir / "JPEGImages", record.filename, where=str(xml_path),
                          allow_outside=self.allow_outside_images)
        image = self.images.load(path)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        check_size_agrees(record.size, (h, w), what=f"{xml_path}: <size>", image=path)
        return finalize_sample(image, self._target(record, index, h, w, xml_path), self.transforms)


def _coco_annotation(obj: VocObject, record: VocRecord, what: str, fixups: FixupLog) -> dict[str, Any] | None:
    """``obj``'s COCO fields (``bbox``, ``area``) after the loader's box rule; None when dropped. Each
    fix-up is counted in ``fixups`` under ``what`` (the XML file and object)."""
    xmin, ymin, xmax, ymax = obj.box
    verdict = inspect_xyxy((xmin - 1, ymin - 1, xmax, ymax), record.size)
    for fixup, detail in verdict.fixups:
        fixups.add(fixup, f"{what}: {detail}")
    if verdict.box is None:
        return None
    x1, y1, x2, y2 = verdict.box
    return {"bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}


class FixupLog:
    """Fix-ups applied while converting: a count per kind and the first instance of each."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}

    def add(self, fixup: str, detail: str) -> None:
        self.counts[fixup] = self.counts.get(fixup, 0) + 1
        self.first.setdefault(fixup, detail)

    def log(self, what: str) -> None:
        for fixup, count in self.counts.items():
            logger.warning("%s: %d %s (first: %s)", what, count, fixup, self.first[fixup])


def voc_to_coco(root: str | Path, split: str, out: str | Path | None = None, *, year: str = "2007",
                category_id_offset: int = 0, remove_difficult: bool = False,
                allow_outside_images: bool = False) -> dict[str, Any]:
    """Convert a VOC split to a standard COCO dict (written to ``out`` when given, atomically).

    Category ids are ``index + category_id_offset`` (0 → 0..19, 1 → 1..20), names included; boxes follow
    the module's 1-based → 0-based convention; each annotation also carries ``difficult`` (0/1).
    Boxes get the loader's fix-ups (:mod:`detr_core.data.box_rules`, the same ``data check`` warns
    about): zero-size, negative (``xmin > xmax``) and NaN boxes are dropped, boxes exceeding the XML's
    ``<size>`` are clipped; each kind is logged as one counted WARNING naming the first XML file and
    object, and recorded in ``info["detrtool_fixups"]``. A ``<filename>`` leaving ``JPEGImages``
    is a :class:`DatasetError` unless ``allow_outside_images``.
    """
    if category_id_offset not in (0, 1):
        raise ValueError(f"category_id_offset must be 0 or 1, got {category_id_offset}")
    voc_dir = resolve_voc_dir(root, year)
    images, anns, fixups = [], [], FixupLog()
    for index, stem in enumerate(read_split(voc_dir, split)):
        xml_path = voc_dir / "Annotations" / f"{stem}.xml"
        record = parse_voc_xml(xml_path)
        path = image_path(voc_dir / "JPEGImages", record.filename, where=str(xml_path),
                          allow_outside=allow_outside_images)
        record = _with_header_size(record, path, xml_path)
        image_id = voc_image_id(stem, index)
        images.append({"id": image_id, "file_name": record.filename,
                       "height": record.size[0], "width": record.size[1]})
        for k, obj in enumerate(record.objects):
            label = _label(obj.name, xml_path, category_id_offset)
            box = None if remove_difficult and obj.difficult else \
                _coco_annotation(obj, record, f"{xml_path.name} object {k} ({obj.name})", fixups)
            if box is not None:
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": label, **box, "iscrowd": 0,
                             "difficult": int(obj.difficult)})
    fixups.log(f"voc2coco {voc_dir} {split}")
    cats = [{"id": i + category_id_offset, "name": n, "supercategory": "voc"} for i, n in enumerate(VOC_CLASSES)]
    coco = {"info": {"description": f"VOC{year} {split} converted by detrtool", "detrtool_fixups": fixups.counts},
            "licenses": [], "images": images, "annotations": anns, "categories": cats}
    if out is not None:
        atomic_write(out, lambda handle: json.dump(coco, handle), binary=False)
        logger.info("voc2coco: %d images, %d boxes -> %s", len(images), len(anns), out)
    return coco
