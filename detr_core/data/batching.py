"""Batching: pad a list of differently sized images into one tensor plus a padding mask.

Images go in the top-left corner (pad right/bottom); ``mask`` is True on padding, False on pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad_images(images: Sequence[Tensor], pad_to: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Pad ``images`` (each [3, H_i, W_i]) into ``images`` [B, 3, H, W] and ``mask`` [B, H, W] bool.

    ``H, W`` is the largest size in the batch, or ``pad_to`` (a fixed canvas) when given. An image larger
    than the canvas is an error, never a silent crop.
    """
    if len(images) == 0:
        raise ValueError("pad_images: got an empty list of images")
    for i, img in enumerate(images):
        if img.dim() != 3:
            raise ValueError(f"pad_images: image {i} must be [C, H, W], got shape {tuple(img.shape)}")
    if pad_to is None:
        height = max(int(img.shape[1]) for img in images)
        width = max(int(img.shape[2]) for img in images)
    else:
        height, width = int(pad_to[0]), int(pad_to[1])
    channels = int(images[0].shape[0])
    batch = images[0].new_zeros((len(images), channels, height, width))
    mask = torch.ones((len(images), height, width), dtype=torch.bool, device=images[0].device)
    for i, img in enumerate(images):
        h, w = int(img.shape[1]), int(img.shape[2])
        if h > height or w > width:
            raise ValueError(f"pad_images: image {i} of size {h}x{w} does not fit the {height}x{width} canvas")
        batch[i, :, :h, :w].copy_(img)
        mask[i, :h, :w] = False
    return batch, mask
