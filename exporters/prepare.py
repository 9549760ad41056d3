"""Model inputs from user images: resize (eval rule, capped to the canvas), normalise, pad, mask.

The one preprocessing used by every runtime, by ``detrtool bench`` and ``detrtool predict``. For an
exported artifact the canvas, batch size and resize rule come from its metadata
(:func:`prepare_for`), so inputs are prepared exactly as at export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from detr_core.data.batching import pad_images
from detr_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize_size, fit_size_to_canvas
from exporters.formats import read_metadata
from exporters.metadata import ArtifactMetadata

DEFAULT_SIZE = 800
DEFAULT_MAX_SIZE = 1333


def to_uint8_chw(image: Any) -> Tensor:
    """A PIL image, numpy [H, W, 3] / [H, W] uint8 or tensor uint8 [3, H, W] -> uint8 [3, H, W] RGB."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"prepare: numpy images must be uint8, got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"prepare: numpy images must be [H, W, 3] RGB, got shape {image.shape}")
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"prepare: tensor images must be uint8 [3, H, W], got {image.dtype} {list(image.shape)}")
        return image
    raise ValueError(f"prepare: unsupported image type {type(image).__name__}")


def target_size(h: int, w: int, *, canvas: tuple[int, int] | None, size: int, max_size: int | None) -> tuple[int, int]:
    """(new_h, new_w): the eval rule, scaled down to fit ``canvas`` when one is given (never cropped)."""
    if canvas is None:
        new_h, new_w = eval_resize_size(h, w, size, max_size)
        return max(1, new_h), max(1, new_w)
    return fit_size_to_canvas(h, w, size, max_size, canvas)


def normalise(image: Tensor, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 [3, H, W] -> float32 [3, H, W]: /255 then (x - mean) / std."""
    return F.normalize(image.to(torch.float32) / 255.0, mean=list(mean), std=list(std))


def prepare(images: Sequence[Any], *, canvas: tuple[int, int] | None = None, size: int = DEFAULT_SIZE,
            max_size: int | None = DEFAULT_MAX_SIZE, batch_size: int | None = None,
            mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
            min_canvas: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Images (PIL / numpy / uint8 tensors, RGB) -> ``images`` float32 [B, 3, H, W], ``mask`` bool
    [B, H, W] (True on padding) and ``orig_sizes`` int64 [B, 2] (h, w of each original image).

    ``canvas`` (H, W): the static canvas every image is fitted into; None pads to the batch's largest
    (and at least to ``min_canvas`` when given: the smallest input a dynamic artifact takes).
    ``batch_size``: fill a static batch with black full-canvas images (mask False) after the real ones;
    their rows of the outputs are to be dropped (outputs do not depend on batch-mates).
    """
    if not images:
        raise ValueError("prepare: got no images")
    pixels = [to_uint8_chw(im) for im in images]
    if batch_size is not None and len(pixels) > batch_size:
        raise ValueError(f"prepare: {len(pixels)} images for a static batch of {batch_size}")
    resized = []
    for im in pixels:
        new_h, new_w = target_size(int(im.shape[1]), int(im.shape[2]), canvas=canvas, size=size, max_size=max_size)
        resized.append(normalise(F.resize(im, [new_h, new_w], antialias=True), mean=mean, std=std))
    orig = [(int(im.shape[1]), int(im.shape[2])) for im in pixels]
    if batch_size is not None and canvas is not None:
        filler = torch.zeros(3, int(canvas[0]), int(canvas[1]))
        resized += [filler] * (batch_size - len(pixels))
        orig += [(int(canvas[0]), int(canvas[1]))] * (batch_size - len(pixels))
    if canvas is None and min_canvas is not None:
        canvas = (max(min_canvas[0], *(int(im.shape[1]) for im in resized)),
                  max(min_canvas[1], *(int(im.shape[2]) for im in resized)))
    batch, mask = pad_images(resized, canvas)
    return batch, mask, torch.tensor(orig, dtype=torch.int64)


def prepare_for(artifact: str | Path | ArtifactMetadata, images: Sequence[Any], *,
                fill_batch: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`prepare` with the canvas, resize rule, mean/std (and static batch) of an artifact; a dynamic
    artifact gets the images as they are (any count), padded to the largest of them (at least its
    smallest height and width)."""
    meta = artifact if isinstance(artifact, ArtifactMetadata) else read_metadata(artifact)
    if meta.dynamic:
        return prepare(images, canvas=None, size=meta.size, max_size=meta.max_size, mean=meta.mean, std=meta.std,
                       min_canvas=dynamic_min_canvas(meta))
    return prepare(images, canvas=tuple(meta.input_size), size=meta.size, max_size=meta.max_size,
                   batch_size=meta.batch_size if fill_batch else None, mean=meta.mean, std=meta.std)


def dynamic_min_canvas(meta: ArtifactMetadata) -> tuple[int, int]:
    """The smallest (H, W) a dynamic artifact takes (its symbolic ranges' minimum)."""
    limits = meta.dynamic_limits
    return int(limits.get("height", (1,))[0]), int(limits.get("width", (1,))[0])
