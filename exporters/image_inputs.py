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
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from detr_core.data.coco import DatasetError, load_rgb_image
from detr_core.input_files import NOT_REGULAR  # the one wording of the special-file rule

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




def _kind_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file (None for a regular file, symlinks followed): a fifo or
    a device (a symlink to /dev/zero) would block or never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "no such file (a broken symlink)" if path.is_symlink() else "no such file or folder"
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    return None if stat.S_ISREG(mode) else NOT_REGULAR


def _list_folder(folder: Path) -> tuple[list[Path], list[Failure]]:
    """The image files of ``folder`` (sorted, by suffix); entries with an image suffix that are not regular
    files (a fifo, a device, a broken symlink) are failures, never skipped in silence."""
    named = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    problems = {p: _kind_problem(p) for p in named}
    return [p for p in named if problems[p] is None], [Failure(p, r) for p, r in problems.items() if r]


def collect_image_paths(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Expand folders to their image files (sorted); missing paths and files that are not regular files
    (a fifo, a device, a broken symlink; named or in a folder) become failures."""
    paths: list[Path] = []
    failures: list[Failure] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found, bad = _list_folder(item)
            if not found and not bad:
                failures.append(Failure(item, "folder holds no image files"))
            paths.extend(found)
            failures.extend(bad)
        elif (problem := _kind_problem(item)) is None:
            paths.append(item)
        else:
            failures.append(Failure(item, problem))
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
