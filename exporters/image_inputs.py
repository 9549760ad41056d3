"""The images a user points ``detrtool predict`` at: files and folders in, RGB images or failures out.

Folders are listed (not recursively) for files with an image suffix; files named explicitly are always
tried, whatever their suffix. Reading goes through ``detr_core.data.coco.load_rgb_image`` (the dataset
reader: EXIF orientation applied; grayscale, RGBA, palette, CMYK and 16-bit converted to 8-bit RGB;
truncation detected; images over ``PIL.Image.MAX_IMAGE_PIXELS`` = 89,478,485 pixels refused from their
header as decompression bombs, before decoding), so a bad file becomes a :class:`Failure` — skipped and
listed by ``detrtool predict`` — never an exception for the whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from detr_core.data.coco import DatasetError, load_rgb_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass(frozen=True)
class Failure:
    """A path that could not be used, and why (one line)."""

    path: Path
    reason: str


@dataclass
class InputImage:
    """An image read for prediction: ``pixels`` uint8 [3, H, W] RGB, upright."""

    path: Path
    pixels: Tensor
    fixups: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the original (upright) image."""
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


def collect_image_paths(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Expand folders to their image files (sorted); missing paths become failures."""
    paths: list[Path] = []
    failures: list[Failure] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                failures.append(Failure(item, "folder holds no image files"))
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            failures.append(Failure(item, "no such file or folder"))
    return paths, failures


def read_image(path: Path) -> InputImage | Failure:
    """Read one image as upright 8-bit RGB; a :class:`Failure` for anything unreadable."""
    try:
        loaded = load_rgb_image(path)
    except DatasetError as exc:
        return Failure(path, str(exc).removeprefix(f"{path}: "))
    for fix in loaded.fixups:
        logger.debug("%s: %s", path, fix)
    pixels = pil_to_tensor(loaded.image).contiguous()
    if pixels.dtype != torch.uint8 or pixels.shape[0] != 3:
        return Failure(path, f"unexpected decoded image {pixels.dtype} {list(pixels.shape)}")
    return InputImage(path, pixels, tuple(loaded.fixups))
