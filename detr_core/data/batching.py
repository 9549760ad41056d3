"""Batching: pad a list of differently sized images into one tensor plus a padding mask.

Images go in the top-left corner (pad right/bottom); ``mask`` is True on padding, False on pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


Sample = tuple[Tensor, dict[str, Any]]


def make_collate(pad_to: tuple[int, int] | None = None) -> Callable[[Sequence[Sample]], tuple[Tensor, Tensor, list]]:
    """A DataLoader ``collate_fn``: ``[(image [3, H_i, W_i], target), ...] -> (images, mask, targets)``.

    ``images`` [B, 3, H, W] float, ``mask`` [B, H, W] bool (True on padding), ``targets`` the list of
    target dicts as the dataset gave them: segmentation targets' ``masks`` bool [N_i, H_i, W_i] stay at their
    own image's size, unpadded (the loss pads them to the batch, as the reference's criterion does). ``H, W`` is the batch maximum, or the fixed ``pad_to`` canvas (e.g. ``--pad-to 800x1333``);
    an image larger than the canvas raises ``ValueError`` naming its ``image_id`` and size.
    """

    def collate(batch: Sequence[Sample]) -> tuple[Tensor, Tensor, list]:
        images = [image for image, _ in batch]
        targets = [target for _, target in batch]
        if pad_to is not None:
            _check_fits(images, targets, pad_to)
        padded, mask = pad_images(images, pad_to)
        return padded, mask, targets

    return collate


def _check_fits(images: Sequence[Tensor], targets: Sequence[dict], pad_to: tuple[int, int]) -> None:
    for image, target in zip(images, targets, strict=True):
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if h > pad_to[0] or w > pad_to[1]:
            image_id = target.get("image_id", "?") if isinstance(target, dict) else "?"
            image_id = int(image_id) if isinstance(image_id, Tensor) else image_id
            raise ValueError(
                f"image {image_id} is {h}x{w} after transforms and does not fit the --pad-to canvas "
                f"{pad_to[0]}x{pad_to[1]}; use a larger canvas or a smaller resize (max_size)"
            )


def collate_fn(batch: Sequence[Sample]) -> tuple[Tensor, Tensor, list]:
    """Collate padding to the largest image of the batch (see :func:`make_collate`)."""
    return make_collate(None)(batch)


#: The range of each side of an ``HxW`` canvas option: at least the backbone's stride (32; a smaller canvas
#: has no feature map, and 1x1 ended in an internal torch assert in the antialiased resize), at most 16384.


