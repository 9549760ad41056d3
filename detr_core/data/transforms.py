"""DETR train/eval transform presets on ``torchvision.transforms.v2`` with tv_tensors.

Samples are ``(image, target)`` pairs: ``image`` a ``tv_tensors.Image`` (uint8 [3, H, W]) and ``target`` a
dict whose ``boxes`` is a ``tv_tensors.BoundingBoxes`` in XYXY pixels and, for segmentation, ``masks`` a
``tv_tensors.Mask`` [N, H, W]. Every geometric step (flip, resize, crop) is a torchvision kernel, so boxes and
masks move with the pixels (masks resized nearest-neighbour, as the reference's ``interpolate(..., "nearest")``;
``ToDtype``/``Normalize`` touch images only); this module never does box arithmetic. A crop clips boxes as
the reference does (a box is not re-fitted to the part of its mask left inside). Tested: the box of a
transformed mask equals the transformed box within a pixel per step (flip and crop: exactly).

The resize rule is the reference DETR one (``detr/datasets/transforms.py::get_size_with_aspect_ratio``),
reproduced exactly by :func:`eval_resize_size` because official checkpoints are evaluated with it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Reference DETR training scales (shorter side 480..800 step 32) and limits.
DETR_TRAIN_SCALES: tuple[int, ...] = tuple(range(480, 801, 32))
DETR_MAX_SIZE = 1333
DETR_EVAL_SIZE = 800
DETR_CROP_RESIZE: tuple[int, ...] = (400, 500, 600)
DETR_CROP_RANGE: tuple[int, int] = (384, 600)


def eval_resize_size(h: int, w: int, size: int, max_size: int | None = None) -> tuple[int, int]:
    """Output ``(new_h, new_w)`` of the reference rule: shorter side ``size``, longer side ≤ ``max_size``."""
    if max_size is not None:
        min_orig, max_orig = float(min(w, h)), float(max(w, h))
        if max_orig / min_orig * size > max_size:
            size = int(round(max_size * min_orig / max_orig))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def fit_size_to_canvas(
    h: int, w: int, size: int, max_size: int | None, canvas_hw: tuple[int, int]
) -> tuple[int, int]:
    """The eval rule, then scaled down (aspect kept, never cropped) until it fits ``canvas_hw`` (H, W)."""
    new_h, new_w = eval_resize_size(h, w, size, max_size)
    canvas_h, canvas_w = int(canvas_hw[0]), int(canvas_hw[1])
    if new_h <= canvas_h and new_w <= canvas_w:
        return new_h, new_w
    scale = min(canvas_h / new_h, canvas_w / new_w)
    return max(1, min(canvas_h, math.floor(new_h * scale))), max(1, min(canvas_w, math.floor(new_w * scale)))


def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    """(H, W) of the first image-like input (tv_tensors.Image, PIL image or plain tensor)."""
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.BoundingBoxes | tv_tensors.Mask):
            continue
        if isinstance(inpt, torch.Tensor | PIL.Image.Image):
            h, w = F.get_size(inpt)
            return int(h), int(w)
    raise ValueError("transforms: the sample holds no image")


class ResizeShorterSide(v2.Transform):
    """Resize so the shorter side is a random choice from ``sizes`` and the longer side ≤ ``max_size``.

    The output size is :func:`eval_resize_size` exactly (a 0 side, possible for extreme aspect ratios such
    as 1x4000, becomes 1); resizing is ``v2.functional.resize`` (antialiased
    bilinear on images, boxes scaled by the same kernel family).
    """

    def __init__(self, sizes: int | Sequence[int], max_size: int | None = None) -> None:
        super().__init__()
        self.sizes = (int(sizes),) if isinstance(sizes, int) else tuple(int(s) for s in sizes)
        self.max_size = max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        new_h, new_w = eval_resize_size(h, w, random.choice(self.sizes), self.max_size)
        return {"size": [max(1, new_h), max(1, new_w)]}  # the rule gives 0 for extreme aspect ratios

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


class RandomSizeCrop(v2.Transform):
    """The reference ``RandomSizeCrop``: crop h in [min, min(H, max)], w in [min, min(W, max)], random place."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        self.min_size, self.max_size = int(min_size), int(max_size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        crop_w = random.randint(min(self.min_size, w), min(w, self.max_size))
        crop_h = random.randint(min(self.min_size, h), min(h, self.max_size))
        top = random.randint(0, h - crop_h)
        left = random.randint(0, w - crop_w)
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def _normalize() -> list[v2.Transform]:
    return [
        v2.ClampBoundingBoxes(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]


def make_train_transforms(
    *,
    scales: Sequence[int] = DETR_TRAIN_SCALES,
    max_size: int | None = DETR_MAX_SIZE,
    crop_resize: Sequence[int] = DETR_CROP_RESIZE,
    crop_range: tuple[int, int] = DETR_CROP_RANGE,
    flip_p: float = 0.5,
) -> v2.Compose:
    """Reference DETR train preset: flip, then multi-scale resize or [resize, random crop, multi-scale]."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=flip_p),
            v2.RandomChoice(
                [
                    ResizeShorterSide(scales, max_size),
                    v2.Compose(
                        [
                            ResizeShorterSide(crop_resize),
                            RandomSizeCrop(*crop_range),
                            ResizeShorterSide(scales, max_size),
                        ]
                    ),
                ]
            ),
            *_normalize(),
        ]
    )


def make_eval_transforms(*, size: int = DETR_EVAL_SIZE, max_size: int | None = DETR_MAX_SIZE) -> v2.Compose:
    """Reference DETR eval preset: shorter side ``size``, longer ≤ ``max_size``, ImageNet normalisation."""
    return v2.Compose([ResizeShorterSide(size, max_size), *_normalize()])


def make_shapes_train_transforms(image_size: int = 128) -> v2.Compose:
    """Small-scale train preset for the synthetic shapes (scales 0.75–1.25 × ``image_size``)."""
    step = max(1, image_size // 8)
    scales = tuple(range(image_size * 3 // 4, image_size * 5 // 4 + 1, step))
    crop = (image_size // 2, image_size * 3 // 4)
    return make_train_transforms(
        scales=scales,
        max_size=image_size * 5 // 3,
        crop_resize=(image_size // 2 * 3 // 2, image_size),
        crop_range=crop,
    )


def make_shapes_eval_transforms(image_size: int = 128) -> v2.Compose:
    """Eval preset for the synthetic shapes: shorter side ``image_size``."""
    return make_eval_transforms(size=image_size, max_size=image_size * 5 // 3)
