"""Images that validation feeds to an artifact and to eager: a full-canvas batch and real images.

Real images are the user's folder (``--validate-images``), or the synthetic shapes val set, whose
images are all square at one size; those are cropped to different aspect ratios so that the batch
mixes sizes and the mask has real padding.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from detr_core.data.coco import load_rgb_tensor

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: (height, width) fractions of a square shapes image kept by each crop, cycled over the images.
_CROPS = ((1.0, 1.0), (0.75, 1.0), (1.0, 0.6), (0.5, 1.0), (1.0, 0.8), (0.9, 0.45))


def example_inputs(*, batch_size: int, input_size: tuple[int, int], with_postprocess: bool,
                   device: torch.device | str = "cpu", seed: int = 0) -> tuple[Tensor, ...]:
    """Deterministic (images [B,3,H,W], mask [B,H,W] with some padding per image[, orig_sizes [B,2]])."""
    gen = torch.Generator().manual_seed(seed)
    h, w = input_size
    images = torch.randn((batch_size, 3, h, w), generator=gen)
    mask = torch.zeros((batch_size, h, w), dtype=torch.bool)
    for i in range(batch_size):
        mask[i, h - (i * h) // (2 * batch_size):, :] = True
        mask[i, :, w - ((i + 1) * w) // (3 * batch_size):] = True
    inputs = (images.to(device), mask.to(device))
    if with_postprocess:
        sizes = (~mask).any(2).sum(1), (~mask).any(1).sum(1)
        inputs += (torch.stack(sizes, 1).to(torch.int64).to(device) * 3,)
    return inputs


def full_canvas_batch(*, batch_size: int, canvas: tuple[int, int], seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Random normalised images filling the canvas: (images, mask all False, orig_sizes = canvas)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn((batch_size, 3, *canvas), generator=gen)
    mask = torch.zeros((batch_size, *canvas), dtype=torch.bool)
    return images, mask, torch.tensor([list(canvas)] * batch_size, dtype=torch.int64)


def read_folder(folder: str | Path, *, count: int) -> list[Tensor]:
    """The first ``count`` images (sorted by name) of ``folder`` as uint8 [3, H, W]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: validation images folder does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) to validate with")
    return [load_rgb_tensor(p) for p in paths]


def shapes_val_images(*, count: int) -> list[Tensor]:
    """``count`` images of the default shapes val set, cropped to different sizes and aspect ratios."""
    from detr_core.data.shapes import ensure_default_shapes

    root = ensure_default_shapes(progress=False)
    images = read_folder(root / "val2017", count=count)
    return [crop_fraction(im, *_CROPS[i % len(_CROPS)]) for i, im in enumerate(images)]


def crop_fraction(image: Tensor, fh: float, fw: float) -> Tensor:
    """The top-left ``fh`` x ``fw`` fraction of ``image`` [3, H, W]."""
    h, w = int(image.shape[1]), int(image.shape[2])
    return image[:, : max(1, round(h * fh)), : max(1, round(w * fw))].contiguous()


def validation_images(source: str | Path | None, *, count: int) -> tuple[list[Tensor], str]:
    """(images, description) from the user's folder or the shapes val set."""
    if source is not None:
        images = read_folder(source, count=count)
        return images, f"{len(images)} images of {source}"
    return shapes_val_images(count=count), f"{count} shapes val images (cropped to varied sizes)"
