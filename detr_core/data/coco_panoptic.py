"""COCO panoptic dataset: images + panoptic JSON + panoptic PNGs -> DETR targets with one row per segment.

Files (the COCO panoptic format): ``ann_file`` holds ``images`` (as in COCO), ``annotations`` (one per image:
``image_id``, ``file_name`` of its PNG in ``panoptic_dir``, ``segments_info`` = [{``id``, ``category_id``,
``iscrowd``, ``bbox``, ``area``}]) and ``categories`` (with ``isthing`` 1/0). A PNG pixel's segment id is
``R + 256 G + 256² B``.

Target (``ds[i] -> (image float32 [3, H, W], target)``), the layout of :class:`~detr_core.data.coco.CocoDetection`
with masks: one row per segment, things and stuff alike: ``labels`` int64 [N] = ``category_id``, ``boxes``
[N, 4] normalised cx,cy,w,h of each segment's mask (the tight box, pixel edges: equal to the JSON ``bbox`` of
a well-formed file), ``masks`` bool [N, h, w] at the transformed size, ``iscrowd`` int64 [N], ``area``
float32 [N] (the JSON ``area``, else the pixel count), ``image_id``, ``orig_size``, ``size``.
Crowd segments are left out of the targets unless ``drop_crowd=False`` (as for detection).

Void: id 0, and any id in the PNG that ``segments_info`` does not list (the COCO panoptic evaluation ignores
such ground-truth pixels too): those pixels belong to no target row. Refused, each as one
:class:`~detr_core.data.coco.DatasetError` line naming the file: an unreadable JSON or one missing
``annotations``/``categories``, ``images``/``categories`` entries without COCO's shape or sharing an id,
a category id outside 0..65535 or an ``isthing`` other than 0/1, an annotation of an unknown image, two
annotations of one image, a segment of an unknown category, a segment id that is not an integer (a bool is
not), duplicate, negative or over 256³ - 1, an ``iscrowd`` other than 0/1 or a non-numeric ``area``, a
missing or unreadable PNG, a file that is not a PNG (a JPEG renamed: its lossy pixels change ids), a PNG
that is not 8-bit RGB or whose size differs from its image's, a listed segment with no pixel in the PNG.

For the evaluator and predict: :attr:`CocoPanoptic.is_thing` ``{category_id: bool}``, ``ann_file``,
``panoptic_dir``, :meth:`CocoPanoptic.png_path`, ``class_names`` / ``num_classes`` (max id + 1).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors

from detr_core.data.coco import (
    DatasetError,
    Transforms,
    _open_checked,
    _stated_hw,
    check_size_agrees,
    class_names_from_categories,
    finalize_sample,
    image_path,
    load_rgb_tensor,
    read_coco_json,
)
from detr_core.data.ids import MAX_CLASS_ID
from detr_core.data.image_cache import ImageCache
from detr_core.data.integrity import _crowd_flag, _is_int, _short, duplicate_id_problems, shape_problems
from detr_core.input_files import NOT_REGULAR, NotRegularFileError
from detr_core.segmentation.panoptic_format import rgb_to_id

logger = logging.getLogger(__name__)

#: The largest segment id an RGB panoptic PNG can hold (``R + 256 G + 256² B``).
MAX_SEGMENT_ID = 256**3 - 1
#: The largest category id taken: DETR's class head has max id + 1 rows (COCO panoptic's ids stop at 200).
MAX_CATEGORY_ID = MAX_CLASS_ID


def read_panoptic_png(path: Path) -> np.ndarray:
    """Segment ids int64 [H, W] of the RGB panoptic PNG ``path``; :class:`DatasetError` naming it when it is
    missing, unreadable or not RGB."""
    try:
        with _open_checked(path) as img:
            if problem := _png_problem(img):
                raise DatasetError(f"{path}: panoptic PNG {problem}")
            img.load()
            return rgb_to_id(np.asarray(img))
    except FileNotFoundError:
        raise DatasetError(f"{path}: panoptic PNG is missing") from None
    except NotRegularFileError:
        raise DatasetError(f"{path}: panoptic PNG is {NOT_REGULAR}") from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: panoptic PNG is not a readable image ({exc})") from None


def _png_problem(img: PIL.Image.Image) -> str | None:
    """Why an opened (not yet decoded) image cannot hold panoptic ids: not a PNG (a JPEG renamed: lossy),
    not RGB, or 16 bits per channel (PIL decodes it as 8-bit ``RGB``, keeping each sample's high byte)."""
    if img.format != "PNG":
        return f"is a {img.format} file, not a PNG (segment ids need lossless pixels)"
    if img.mode != "RGB":
        return f"has mode {img.mode}, expected RGB (id = R + 256G + 256²B)"
    rawmode = img.tile[0].args if img.tile else ""
    if ";16" in str(rawmode):
        return "has 16 bits per channel, expected 8 (PIL would keep each sample's high byte: ids would change)"
    return None


def _finite_number(value: Any) -> bool:
    """True for a JSON number (not a bool) that is finite as a float (an int too big for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _segment_id_problem(seg_id: int, seen: set[int]) -> str | None:
    """Why ``seg_id`` cannot name a segment of an RGB PNG (void, negative, over 256³ - 1) or repeats one."""
    if seg_id <= 0:
        return f"segment id {seg_id} is {'0 (void)' if seg_id == 0 else 'negative'}"
    if seg_id > MAX_SEGMENT_ID:
        return f"segment id {seg_id} is over {MAX_SEGMENT_ID} (256³ - 1), more than an RGB PNG pixel holds"
    return f"segment id {seg_id} is listed twice" if seg_id in seen else None


def _segment_shape_problem(seg: Any) -> str | None:
    """A segment that is not an object with integer ``id`` and ``category_id`` (``true`` is not 1, ``3.0`` not 3)."""
    if not isinstance(seg, dict):
        return f"segment {_short(seg)} is not an object"
    bad = next((key for key in ("id", "category_id") if not _is_int(seg.get(key))), None)
    return f"segment {_short(seg.get('id'))}: {bad!r} is {_short(seg.get(bad))}, not an integer" if bad else None


def _segment_problem(seg: Any, categories: set[int], seen: set[int]) -> str | None:
    if problem := _segment_shape_problem(seg):
        return problem
    if seg["category_id"] not in categories:
        return f"segment {seg['id']} has category_id {seg['category_id']}, not in 'categories'"
    if problem := _segment_id_problem(seg["id"], seen):
        return problem
    seen.add(seg["id"])
    if _crowd_flag(seg) is None:
        return f"segment {seg['id']}: 'iscrowd' is {_short(seg['iscrowd'])}, not 0 or 1"
    area = seg.get("area", 0)
    return None if _finite_number(area) else f"segment {seg['id']}: 'area' is {_short(area)}, not a number"


def category_problems(categories: list[dict[str, Any]]) -> list[str]:
    """Categories (integer ids already checked) DETR cannot take: an id outside 0..:data:`MAX_CATEGORY_ID`
    (a class head of max id + 1 rows), an ``isthing`` other than 0/1 (absent: a thing; ``null`` or ``"no"``
    would be read as stuff or thing silently)."""
    return [p for p in map(_category_problem, categories) if p]


def _category_problem(cat: dict[str, Any]) -> str | None:
    if not 0 <= cat["id"] <= MAX_CATEGORY_ID:
        return f"category id {_short(cat['id'])} is outside 0..{MAX_CATEGORY_ID} (DETR's class head has max id + 1 rows)"
    isthing = cat.get("isthing", 1)
    if not isinstance(isthing, int) or isthing not in (0, 1):  # JSON true/false are 1/0
        return f"category {cat['id']} ({cat.get('name')!r}): 'isthing' is {_short(isthing)}, not 0 or 1"
    return None


def _annotation_problem(ann: Any, images: set[int], categories: set[int]) -> str | None:
    if not isinstance(ann, dict) or not isinstance(ann.get("file_name"), str):
        return f"annotation {str(ann)[:80]} lacks a 'file_name'"
    if not _is_int(ann.get("image_id")) or ann["image_id"] not in images:
        return f"annotation {ann['file_name']!r} names image_id {ann.get('image_id')!r}, not in 'images'"
    if not isinstance(ann.get("segments_info"), list):
        return f"image {ann['image_id']}: 'segments_info' is not a list"
    seen: set[int] = set()
    problems = (_segment_problem(seg, categories, seen) for seg in ann["segments_info"])
    problem = next((p for p in problems if p), None)
    return f"image {ann['image_id']}: {problem}" if problem else None


def load_panoptic_json(ann_file: Path) -> dict[str, Any]:
    """The checked panoptic JSON dict (see the module's list of refusals); one line naming ``ann_file``."""
    data = read_coco_json(ann_file)
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: not a COCO panoptic file (no '{key}' list)")
    if not all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in data["categories"]):
        raise DatasetError(f"{ann_file}: a category lacks an integer 'id'")
    lists = {"images": data.get("images"), "categories": data["categories"]}
    problems = shape_problems(lists)
    problems = problems or duplicate_id_problems(lists) or category_problems(data["categories"])
    if problems:
        raise DatasetError(f"{ann_file}: {problems[0]}")
    images = {i["id"] for i in data["images"]}
    categories = {c["id"] for c in data["categories"]}
    annotated: dict[int, str] = {}
    for ann in data["annotations"]:
        problem = _annotation_problem(ann, images, categories) or _repeat_problem(ann, annotated)
        if problem:
            raise DatasetError(f"{ann_file}: {problem}")
    return data


def _repeat_problem(ann: dict[str, Any], annotated: dict[int, str]) -> str | None:
    """Two annotations for one image (a reader would keep one silently); ``annotated``: {image id: PNG}."""
    first = annotated.get(ann["image_id"])
    if first is not None:
        return f"image {ann['image_id']}: two annotations ({first!r} and {ann['file_name']!r})"
    annotated[ann["image_id"]] = ann["file_name"]
    return None


def masks_to_xyxy(masks: Tensor) -> Tensor:
    """Tight boxes float32 [N, 4] XYXY in pixel edges (``x2 = last column + 1``) of non-empty masks [N, H, W]."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    h_idx = torch.arange(masks.shape[1], dtype=torch.float32)
    w_idx = torch.arange(masks.shape[2], dtype=torch.float32)
    big = float(max(masks.shape[1:]) + 1)
    x1 = torch.where(cols, w_idx, big).amin(dim=1)
    x2 = torch.where(cols, w_idx, -1.0).amax(dim=1) + 1
    y1 = torch.where(rows, h_idx, big).amin(dim=1)
    y2 = torch.where(rows, h_idx, -1.0).amax(dim=1) + 1
    return torch.stack([x1, y1, x2, y2], dim=1)


def panoptic_split_paths(root: str | Path, split: str) -> tuple[Path, Path, Path]:
    """(images dir, panoptic JSON, PNG dir) of ``split`` in the reference layout: ``root/{split}2017``,
    ``root/annotations/panoptic_{split}2017.json``, ``root/panoptic_{split}2017`` (the shapes panoptic's too)."""
    root = Path(root)
    return root / f"{split}2017", root / "annotations" / f"panoptic_{split}2017.json", root / f"panoptic_{split}2017"


class CocoPanoptic(torch.utils.data.Dataset):
    """COCO panoptic dataset. ``ds[i] -> (image float32 [3, H, W], target dict)`` (layout: module docstring).

    ``images_dir`` holds the images (``images[].file_name``), ``panoptic_dir`` the PNGs
    (``annotations[].file_name``). A ``file_name`` leaving its folder is refused unless ``allow_outside_images``.
    """

    def __init__(self, images_dir: str | Path, ann_file: str | Path, panoptic_dir: str | Path, *,
                 transforms: Transforms | None = None, drop_crowd: bool = True, cache_images: bool = False,
                 allow_outside_images: bool = False) -> None:
        self.images_dir, self.ann_file, self.panoptic_dir = Path(images_dir), Path(ann_file), Path(panoptic_dir)
        self.transforms, self.drop_crowd = transforms, drop_crowd
        self.data = load_panoptic_json(self.ann_file)
        self.infos = {int(i["id"]): i for i in self.data["images"]}
        self.anns = {int(a["image_id"]): a for a in self.data["annotations"]}
        self.ids: list[int] = sorted(self.infos)
        self.paths = {i: self._path(self.images_dir, info.get("file_name", ""), i, allow_outside_images)
                      for i, info in self.infos.items()}
        self.png_paths = {i: self._path(self.panoptic_dir, a["file_name"], i, allow_outside_images)
                          for i, a in self.anns.items()}
        self.num_classes, self.class_names = class_names_from_categories(self.data["categories"])
        self.is_thing: dict[int, bool] = {int(c["id"]): bool(c.get("isthing", 1)) for c in self.data["categories"]}
        self.images = ImageCache(load_rgb_tensor, enabled=cache_images)
        self._void_warned = False

    @classmethod
    def from_root(cls, root: str | Path, split: str, **kwargs: Any) -> CocoPanoptic:
        """The ``split`` of a reference-layout folder (:func:`panoptic_split_paths`)."""
        return cls(*panoptic_split_paths(root, split), **kwargs)

    def _path(self, folder: Path, file_name: Any, image_id: int, allow_outside: bool) -> Path:
        if not isinstance(file_name, str) or not file_name:
            raise DatasetError(f"{self.ann_file}: image {image_id} has no 'file_name'")
        return image_path(folder, file_name, where=f"{self.ann_file}: image {image_id}", allow_outside=allow_outside)

    @property
    def category_ids(self) -> list[int]:
        """Every category id a segment uses or ``categories`` lists (sorted), as ``CocoDetection.category_ids``."""
        used = {int(s["category_id"]) for a in self.data["annotations"] for s in a.get("segments_info", [])}
        return sorted(used | {int(c["id"]) for c in self.data["categories"]})

    def png_path(self, image_id: int) -> Path | None:
        """The panoptic PNG of ``image_id`` (``None`` when the JSON has no annotation for it)."""
        return self.png_paths.get(image_id)

    def __len__(self) -> int:
        return len(self.ids)

    def _segments(self, image_id: int, hw: tuple[int, int]) -> tuple[list[dict[str, Any]], Tensor]:
        """The kept ``segments_info`` entries and their masks bool [N, H, W] (checked against the PNG)."""
        ann = self.anns.get(image_id)
        if ann is None:
            return [], torch.zeros((0, *hw), dtype=torch.bool)
        png = self.png_paths[image_id]
        ids = read_panoptic_png(png)
        if tuple(ids.shape) != tuple(hw):
            raise DatasetError(f"{png}: panoptic PNG is {ids.shape[0]}x{ids.shape[1]} (HxW) but its image "
                               f"{self.paths[image_id]} is {hw[0]}x{hw[1]}")
        listed = list(ann["segments_info"])
        self._warn_unlisted(ids, {seg["id"] for seg in listed}, png)
        segments = [s for s in listed if not (self.drop_crowd and s.get("iscrowd", 0))]
        masks = torch.from_numpy(ids[None] == np.array([s["id"] for s in segments], dtype=np.int64)[:, None, None])
        empty = [s["id"] for s, m in zip(segments, masks, strict=True) if not m.any()]
        if empty:
            raise DatasetError(f"{png}: segment id {empty[0]} of image {image_id} is listed in {self.ann_file} "
                               "but has no pixel in the PNG")
        return segments, masks

    def _warn_unlisted(self, ids: np.ndarray, listed: set[int], png: Path) -> None:
        """Ids in the PNG that ``segments_info`` does not list are void; say so once per dataset."""
        if self._void_warned:
            return
        unlisted = sorted(set(np.unique(ids).tolist()) - listed - {0})
        if unlisted:
            self._void_warned = True
            logger.warning("%s: segment id(s) %s are not in segments_info; read as void (the first such PNG of %s; "
                           "later ones are not reported)", png, unlisted[:5], self.ann_file)

    def _raw_target(self, image_id: int, h: int, w: int) -> dict[str, Any]:
        segments, masks = self._segments(image_id, (h, w))
        pixels = masks.flatten(1).sum(1).float()
        area = [float(s.get("area", p)) for s, p in zip(segments, pixels.tolist(), strict=True)]
        return {
            "boxes": tv_tensors.BoundingBoxes(masks_to_xyxy(masks), format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([int(s["category_id"]) for s in segments], dtype=torch.int64),
            "masks": tv_tensors.Mask(masks.to(torch.uint8)),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "area": torch.tensor(area, dtype=torch.float32),
            "iscrowd": torch.tensor([int(s.get("iscrowd", 0)) for s in segments], dtype=torch.int64),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image = self.images.load(self.paths[image_id])
        h, w = int(image.shape[-2]), int(image.shape[-1])
        check_size_agrees(_stated_hw(self.infos[image_id]), (h, w), image=self.paths[image_id],
                          what=f"{self.ann_file}: image {image_id} (height, width)")
        return finalize_sample(image, self._raw_target(image_id, h, w), self.transforms)
