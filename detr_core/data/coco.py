"""COCO-format detection dataset: ``(image [3, H, W] float32, target dict)`` samples for DETR.

Conventions (the reference DETR's):

- ``labels`` are the category ids exactly as in the file (int64); ``num_classes = max id + 1``.
- ``boxes`` float32 [N, 4] normalised ``(cx, cy, w, h)`` relative to the *transformed* image size.
- crowd annotations (``iscrowd=1``) are dropped; boxes are clipped to the image; boxes with no area after
  clipping (w or h ≤ 0) and boxes with NaN/inf coordinates are removed.
- images are converted to RGB (grayscale, RGBA, palette, CMYK, 16-bit) and their EXIF orientation is applied.
- ``masks=True`` adds ``masks`` bool [N, H, W] (each kept annotation's ``segmentation`` decoded by
  :mod:`detr_core.data.coco_masks`, moved by the transforms as a ``tv_tensors.Mask``), row-aligned with
  ``labels``/``boxes``: every filter of per-object fields (:data:`PER_OBJECT_KEYS`) drops the same rows.

Bad files never surface as an obscure traceback from a DataLoader worker: they raise :class:`DatasetError`
naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from PIL import ImageOps
from pycocotools.coco import COCO
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms.v2 import functional as F

from detr_core.data.coco_masks import decode_segmentation, segmentation_problem
from detr_core.data.image_cache import ImageCache
from detr_core.data.integrity import duplicate_id_problems, outside_reason, reference_problems, shape_problems
from detr_core.input_files import NOT_REGULAR, NotRegularFileError, check_regular, read_regular_text

logger = logging.getLogger(__name__)

Transforms = Callable[[Any, Any], tuple[Any, Any]]
_EXIF_ORIENTATION = 0x0112
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file and the problem.

    The message stays one line when a DataLoader worker raised it: torch re-raises ``DatasetError(text)``
    in the main process with "Caught DatasetError in DataLoader worker ..." and the worker's traceback as
    ``text``; only the original message (its last line) is kept.
    """

    def __init__(self, message: str = "") -> None:
        if "Original Traceback" in message:
            last = [line for line in message.splitlines() if line.strip()][-1]
            message = last.split("DatasetError: ", 1)[-1]
        super().__init__(message)


@dataclass
class LoadedImage:
    """An RGB PIL image plus the fix-ups applied while loading (e.g. ``"mode L converted to RGB"``)."""

    image: PIL.Image.Image
    fixups: list[str] = field(default_factory=list)


def _high_depth_top(img: PIL.Image.Image, arr: np.ndarray) -> float:
    """The value that is white in a 16-bit or float image: its dtype decides. 16-bit integers (``I;16*``, and
    ``I``, which is how PIL opens a 16-bit PNG) are 0..65535; float (``F``) images are 0..1. Values outside that
    range (a float TIFF holding 0..255 was divided by 65535: black; a 32-bit integer image) are refused, naming
    the range found, instead of being scaled by a guess."""
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    top = 1.0 if img.mode == "F" else 65535.0
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= top):
        kind = "float images are read as 0..1" if img.mode == "F" else "16-bit images are read as 0..65535"
        raise ValueError(f"mode {img.mode} image holds values {low:g}..{high:g}; {kind} (save it as 8- or 16-bit "
                         "integers, or scaled to that range)")
    return top


def _to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit/float data scaled by its dtype's range, see
    :func:`_high_depth_top`; alpha dropped)."""
    if img.mode in _HIGH_DEPTH_MODES:
        arr = np.asarray(img, dtype=np.float64)
        top = _high_depth_top(img, arr)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _open_checked(path: Path) -> PIL.Image.Image:
    """``PIL.Image.open`` refusing images over :data:`MAX_IMAGE_PIXELS` (PIL's own bomb check, its warning
    turned into an error) before any pixel is decoded."""
    check_regular(path)  # a fifo or a device would block open() forever
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            return PIL.Image.open(path)
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise DatasetError(f"{path}: image refused as a possible decompression bomb: {count}, over the limit of "
                           f"{PIL.Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS)") from None


def load_rgb_image(path: str | Path) -> LoadedImage:
    """Open ``path`` fully (truncation is detected), apply EXIF orientation, convert to RGB.

    Raises :class:`DatasetError` for a missing, corrupt or truncated file, and for an image of more than
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89,478,485 by default, about 9459x9459; a decompression bomb),
    refused from its header before decoding.
    """
    path = Path(path)
    fixups: list[str] = []
    try:
        with _open_checked(path) as img:
            img.load()
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation not in (None, 1):
                img = ImageOps.exif_transpose(img)
                fixups.append(f"EXIF orientation {orientation} applied")
            if img.mode != "RGB":
                fixups.append(f"mode {img.mode} converted to RGB")
                try:
                    img = _to_rgb(img)
                except ValueError as exc:  # values outside the range its dtype declares
                    raise DatasetError(f"{path}: {exc}") from None
            return LoadedImage(img.copy(), fixups)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing") from None
    except NotRegularFileError:
        raise DatasetError(f"{path}: image is {NOT_REGULAR}") from None
    except PIL.UnidentifiedImageError:
        raise DatasetError(f"{path}: not a readable image (corrupt or unknown format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: image file is corrupt or truncated ({exc})") from None


def load_rgb_tensor(path: str | Path) -> Tensor:
    """:func:`load_rgb_image` as a uint8 [3, H, W] tensor."""
    return F.pil_to_tensor(load_rgb_image(path).image)


def read_coco_json(ann_path: Path) -> dict[str, Any]:
    """The JSON dict of a COCO annotation file; :class:`DatasetError` when missing, unreadable or not COCO."""
    try:
        data = json.loads(read_regular_text(ann_path))
    except FileNotFoundError:
        raise DatasetError(f"{ann_path}: annotation file is missing") from None
    except NotRegularFileError:
        raise DatasetError(f"{ann_path}: annotation file is {NOT_REGULAR}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{ann_path}: annotation file is not readable JSON ({exc})") from None
    except RecursionError:
        raise DatasetError(f"{ann_path}: not a readable JSON file (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{ann_path}: not a COCO annotation file (no 'images' list)")
    return data


def _refuse_problems(ann_path: Path, problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s): run 'detrtool data check')" if len(problems) > 1 else ""
        raise DatasetError(f"{ann_path}: {problems[0]}{more}")


def _warn_degenerate_boxes(ann_path: Path, annotations: list[dict[str, Any]]) -> None:
    """The loader drops boxes with NaN/inf coordinates or no area; say how many, once per file."""
    bad = [a for a in annotations if not a.get("iscrowd", 0) and not _usable_xywh(a["bbox"])]
    if bad:
        logger.warning("%s: %d annotation(s) have a box with NaN/inf coordinates or zero/negative size "
                       "(first: annotation %s, bbox %s); dropped from training targets", ann_path, len(bad),
                       bad[0]["id"], bad[0]["bbox"])


def _usable_xywh(bbox: list[Any]) -> bool:
    values = [float("nan") if v is None else float(v) for v in bbox]
    return all(math.isfinite(v) for v in values) and values[2] > 0 and values[3] > 0


def load_coco_json(ann_path: str | Path) -> COCO:
    """Load a COCO annotation file with pycocotools (quietly), after the whole-file rules of
    :mod:`detr_core.data.integrity`: :class:`DatasetError` (one line naming the file and the first
    problem, with a count of the others) for an unreadable file, a malformed entry, a duplicate
    image / annotation / category id, an annotation pointing at a missing image or category, a bbox that
    is not four numbers. Boxes the loader drops (NaN/inf, zero or negative size) are a counted warning."""
    ann_path = Path(ann_path)
    data = read_coco_json(ann_path)
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    _refuse_problems(ann_path, shape_problems(data))
    _refuse_problems(ann_path, duplicate_id_problems(data) + reference_problems(data))
    _warn_degenerate_boxes(ann_path, data["annotations"])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def image_path(images_dir: Path, file_name: str, *, where: str, allow_outside: bool) -> Path:
    """``images_dir / file_name``; a ``file_name`` leaving the folder (absolute, or ``..`` out of it) is a
    :class:`DatasetError` naming ``where`` (file and image) unless ``allow_outside``."""
    reason = outside_reason(file_name, images_dir)
    if reason and not allow_outside:
        raise DatasetError(f"{where}: file_name {file_name!r} {reason}, outside the images folder {images_dir}; "
                           "refused (pass --allow-outside-images to read it)")
    return images_dir / file_name


def check_size_agrees(stated: tuple[int, int], actual: tuple[int, int], *, what: str, image: Path) -> None:
    """A :class:`DatasetError` when an annotation's stated (H, W) (both non-zero: zero means not given)
    differs from the image's: its boxes are in the stated frame, so they would land in the wrong place."""
    if all(stated) and tuple(stated) != tuple(actual):
        raise DatasetError(f"{what} says {stated[0]}x{stated[1]} (HxW) but {image} is {actual[0]}x{actual[1]}; "
                           "the boxes are in the stated frame (fix the annotation or the image)")


def _stated_hw(info: dict[str, Any]) -> tuple[int, int]:
    """``images[]`` entry's (height, width); (0, 0) where not given as positive integers (nothing to check)."""
    h, w = info.get("height"), info.get("width")
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w))
    return (h, w) if ok else (0, 0)


def class_names_from_categories(categories: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """DETR convention: ``num_classes = max id + 1``; ``names[id]`` is the name, ``"N/A"`` for unused ids."""
    if not categories:
        return 0, []
    num_classes = max(int(c["id"]) for c in categories) + 1
    names = ["N/A"] * num_classes
    for cat in categories:
        names[int(cat["id"])] = str(cat.get("name", cat["id"]))
    return num_classes, names


#: Target fields holding one entry per object (filtered together with ``boxes``).
PER_OBJECT_KEYS: tuple[str, ...] = ("labels", "area", "iscrowd", "difficult", "masks")


def _rows(value: Tensor, keep: Tensor) -> Tensor:
    """``value[keep]``, still a tv_tensor (e.g. ``Mask``) when it was one, so later transforms move it."""
    rows = value[keep]
    return tv_tensors.wrap(rows, like=value) if isinstance(value, tv_tensors.TVTensor) else rows


def clean_boxes(target: dict[str, Any]) -> dict[str, Any]:
    """Clip ``boxes`` (BoundingBoxes XYXY) to the canvas, drop non-finite and zero-area ones (all fields)."""
    boxes = target["boxes"]
    finite = torch.isfinite(boxes).all(dim=1)
    clipped = F.clamp_bounding_boxes(
        torch.nan_to_num(boxes.as_subclass(Tensor)),
        format=tv_tensors.BoundingBoxFormat.XYXY,
        canvas_size=boxes.canvas_size,
        clamping_mode="hard",
    )
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    out = dict(target)
    for key in PER_OBJECT_KEYS:
        if key in target:
            out[key] = _rows(target[key], keep)
    out["boxes"] = tv_tensors.wrap(clipped[keep], like=boxes)
    return out


def finalize_sample(
    image: PIL.Image.Image | Tensor, target: dict[str, Any], transforms: Transforms | None
) -> tuple[Tensor, dict[str, Any]]:
    """Apply ``transforms`` to (Image, target with XYXY BoundingBoxes), then DETR's target layout.

    ``image`` is an RGB PIL image or a uint8 [3, H, W] tensor (not modified).

    Returns ``image`` float32 [3, H, W] (normalised by the transforms, or in [0, 1] without them) and the
    target with ``boxes`` float32 [N, 4] normalised cx,cy,w,h, ``size`` = (H, W) after transforms and, when
    the target had a ``masks`` ``tv_tensors.Mask`` [N, H0, W0], ``masks`` bool [N, H, W] (a plain tensor).
    """
    img = tv_tensors.Image(image if isinstance(image, Tensor) else F.pil_to_tensor(image))
    target = clean_boxes(target)
    if transforms is not None:
        img, target = transforms(img, target)
        target = clean_boxes(target)
    if img.dtype == torch.uint8:
        img = F.to_dtype(img, torch.float32, scale=True)
    h, w = int(img.shape[-2]), int(img.shape[-1])
    boxes = box_convert(target["boxes"].as_subclass(Tensor).float(), "xyxy", "cxcywh")
    target["boxes"] = boxes / torch.tensor([w, h, w, h], dtype=torch.float32)
    target["size"] = torch.tensor([h, w], dtype=torch.int64)
    if "masks" in target:
        target["masks"] = target["masks"].as_subclass(Tensor).bool()
    return img.as_subclass(Tensor), target


class CocoDetection(torch.utils.data.Dataset):
    """COCO-format dataset. ``ds[i] -> (image float32 [3, H, W], target dict)``.

    Target: ``boxes`` float32 [N, 4] (cx, cy, w, h in [0, 1]), ``labels`` int64 [N] (file category ids),
    ``image_id`` int64 scalar, ``area`` float32 [N] (annotation area, original pixels), ``iscrowd`` int64
    [N], ``orig_size`` int64 [2] (h, w) and ``size`` int64 [2] (h, w after transforms).
    ``cache_images`` keeps decoded images in memory (:mod:`detr_core.data.image_cache`). An image whose
    decoded size differs from its ``images[]`` height/width is a :class:`DatasetError` naming the image id and
    file (its boxes are in the stated frame).
    The file passes :func:`load_coco_json`'s rules; a ``file_name`` leaving ``images_dir`` (absolute or
    ``..``) is refused unless ``allow_outside_images`` (then a counted warning).
    ``masks=True`` adds ``masks`` bool [N, H, W] at the transformed size, row-aligned with ``labels``; a kept
    annotation whose ``segmentation`` is missing or malformed is a :class:`DatasetError` naming the file,
    image id and annotation id (:func:`detr_core.data.coco_masks.segmentation_problem`).
    """

    def __init__(self, images_dir: str | Path, ann_file: str | Path, *, transforms: Transforms | None = None,
                 drop_crowd: bool = True, cache_images: bool = False, allow_outside_images: bool = False,
                 masks: bool = False) -> None:
        self.images_dir = Path(images_dir)
        self.masks = masks
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.drop_crowd = drop_crowd
        self.coco = load_coco_json(self.ann_file)
        self.paths = self._image_paths(allow_outside_images)
        self.ids: list[int] = sorted(self.coco.imgs)
        self.num_classes, self.class_names = class_names_from_categories(self.coco.dataset["categories"])
        self.images = ImageCache(load_rgb_tensor, enabled=cache_images)

    def _image_paths(self, allow_outside: bool) -> dict[int, Path]:
        """Image id -> path, every ``file_name`` checked by :func:`image_path` up front."""
        paths = {image_id: image_path(self.images_dir, info["file_name"], allow_outside=allow_outside,
                                      where=f"{self.ann_file}: image {image_id}")
                 for image_id, info in self.coco.imgs.items()}
        outside = [i for i, info in self.coco.imgs.items() if outside_reason(info["file_name"], self.images_dir)]
        if outside:
            logger.warning("%s: %d file_name(s) lie outside the images folder %s (first: image %s, %r); read "
                           "because --allow-outside-images was given", self.ann_file, len(outside), self.images_dir,
                           outside[0], self.coco.imgs[outside[0]]["file_name"])
        return paths

    @property
    def category_ids(self) -> list[int]:
        """Every category id used by an annotation or listed in ``categories`` (sorted)."""
        used = {int(a["category_id"]) for a in self.coco.dataset["annotations"]}
        return sorted(used | {int(c) for c in self.coco.cats})

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def _bbox(ann: dict[str, Any]) -> list[float]:
        """``[x, y, w, h]`` floats (JSON null -> NaN, dropped later); :func:`load_coco_json` checked the shape."""
        return [float("nan") if v is None else float(v) for v in ann["bbox"]]

    def _masks(self, anns: list[dict[str, Any]], image_id: int, h: int, w: int) -> tv_tensors.Mask:
        """``tv_tensors.Mask`` uint8 [N, H, W] of ``anns``' segmentations (checked first, one line each)."""
        planes = [np.zeros((0, h, w), dtype=np.uint8)]
        for ann in anns:
            problem = ("has no 'segmentation'" if "segmentation" not in ann
                       else segmentation_problem(ann["segmentation"], (h, w)))
            if problem:
                raise DatasetError(f"{self.ann_file}: image {image_id}, annotation {ann['id']}: segmentation {problem}")
            planes.append(decode_segmentation(ann["segmentation"], h, w)[None])
        return tv_tensors.Mask(torch.from_numpy(np.concatenate(planes)))

    def _raw_target(self, image_id: int, h: int, w: int) -> dict[str, Any]:
        anns = self.coco.imgToAnns.get(image_id, [])
        if self.drop_crowd:
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        extra = {"masks": self._masks(anns, image_id, h, w)} if self.masks else {}
        xywh = torch.tensor([self._bbox(a) for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([int(a.get("category_id", -1)) for a in anns], dtype=torch.int64)
        boxes = tv_tensors.BoundingBoxes(xywh, format="XYWH", canvas_size=(h, w))
        return {
            "boxes": F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY),
            "labels": labels,
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "area": torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
            **extra,
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image = self.images.load(self.paths[image_id])
        h, w = int(image.shape[-2]), int(image.shape[-1])
        info = self.coco.imgs[image_id]
        check_size_agrees(_stated_hw(info), (h, w), what=f"{self.ann_file}: image {image_id} (height, width)",
                          image=self.paths[image_id])
        return finalize_sample(image, self._raw_target(image_id, h, w), self.transforms)
