"""Image files for the predict tests: a few shapes val images, odd modes and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from detr_core.data.shapes import ShapesParams, generate_shapes

#: name -> (H, W) of the upright image ``write_odd_images`` makes.
ODD_SIZES = {"gray.png": (50, 70), "rgba.png": (64, 48), "deep16.png": (40, 90), "palette.gif": (33, 44),
             "rotated.jpg": (80, 60)}
BAD_FILES = ("text.jpg", "truncated.png")


def shapes_val_images(root: Path, count: int = 4) -> list[Path]:
    """``count`` deterministic 128x128 shapes val images (COCO layout under ``root``)."""
    generate_shapes(root, ShapesParams(train_count=1, val_count=count), progress=False)
    return sorted((root / "val2017").glob("*.png"))


def write_odd_images(folder: Path) -> dict[str, Path]:
    """Grayscale, RGBA, 16-bit, palette, an EXIF-rotated JPEG (stored 60x80, upright 80x60) and two bad
    files: a text file named .jpg and a truncated PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {name: folder / name for name in (*ODD_SIZES, *BAD_FILES)}
    PIL.Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8), "L").save(paths["gray.png"])
    PIL.Image.fromarray(rng.integers(0, 255, (64, 48, 4), dtype=np.uint8), "RGBA").save(paths["rgba.png"])
    PIL.Image.fromarray(rng.integers(0, 65535, (40, 90), dtype=np.uint16)).save(paths["deep16.png"])
    PIL.Image.fromarray(rng.integers(0, 255, (33, 44, 3), dtype=np.uint8)).convert("P").save(paths["palette.gif"])
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # stored landscape 60x80 (HxW), shown rotated 90 degrees clockwise: 80x60
    PIL.Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(paths["rotated.jpg"], exif=exif)
    paths["text.jpg"].write_text("this is not a picture\n")
    PIL.Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "whole.png")
    paths["truncated.png"].write_bytes((folder / "whole.png").read_bytes()[:400])
    (folder / "whole.png").unlink()
    return paths
