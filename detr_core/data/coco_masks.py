"""COCO ``segmentation`` fields -> binary masks, checked before pycocotools sees them.

Three layouts (the COCO format's): polygons ``[[x1, y1, x2, y2, ...], ...]`` (pixel coordinates, every
polygon of an object merged), uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}`` (column-major run
lengths starting with a 0-run, usually crowd regions) and compressed RLE ``{"size": [h, w], "counts": str}``.
Decoding is ``pycocotools.mask`` (``frPyObjects`` / ``merge`` / ``decode``), so a mask equals
``COCO.annToMask``'s. A polygon of fewer than three points (2 or 4 numbers) encloses nothing and is left out
(pycocotools would read 4 numbers as a box).

Every problem is found here first, as one line (:func:`segmentation_problem`): pycocotools' C decoder
trusts the run lengths (a compressed string whose runs sum past ``h * w`` writes past its buffer), so an RLE
whose runs do not sum to exactly ``h * w`` is refused, never decoded; and it rasterises a polygon's whole
outline, so a vertex more than the image's size outside the image (x outside [-W, 2W], y outside [-H, 2H])
is refused too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

_NUMBER = (int, float)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _far_outside(poly: list[float], hw: tuple[int, int]) -> bool:
    """A vertex more than the image's own size outside it (pycocotools rasterises the whole outline: a
    coordinate of 3e7 took 3.5 GB)."""
    h, w = hw
    return bool(h and w) and any(not -w <= x <= 2 * w or not -h <= y <= 2 * h for x, y in zip(poly[::2], poly[1::2], strict=True))


def _polygon_problem(polygons: list[Any], hw: tuple[int, int]) -> str | None:
    if not polygons:
        return "is an empty polygon list"
    for index, poly in enumerate(polygons):
        if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
            return f"polygon {index} is not a list of finite numbers"
        if len(poly) % 2:
            return f"polygon {index} has an odd number of coordinates ({len(poly)})"
        if _far_outside(poly, hw):
            return f"polygon {index} has a vertex far outside the {hw[0]}x{hw[1]} (HxW) image"
    return None


def compressed_rle_counts(text: str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (the format's 6-bit, delta-coded varints); ``None``
    when the string is cut short mid-number or holds a character outside the format's range."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                return None
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            pos, shift = pos + 1, shift + 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        counts.append(value + counts[-2] if len(counts) > 2 else value)
    return counts


def _rle_counts(counts: Any) -> list[int] | None:
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        return compressed_rle_counts(counts)
    if isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return counts
    return None


def _rle_problem(rle: dict[str, Any], hw: tuple[int, int]) -> str | None:
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return f"RLE size {size!r} is not [height, width]"
    if all(hw) and tuple(size) != tuple(hw):
        return f"RLE size {size[0]}x{size[1]} does not match the image's {hw[0]}x{hw[1]} (HxW)"
    counts = _rle_counts(rle.get("counts"))
    if counts is None:
        return "RLE counts are neither a list of integers nor a compressed RLE string"
    if any(c < 0 for c in counts) or sum(counts) != size[0] * size[1]:
        return f"RLE runs sum to {sum(counts)} (or hold a negative run), not height * width = {size[0] * size[1]}"
    return None


def segmentation_problem(segmentation: Any, hw: tuple[int, int]) -> str | None:
    """What is wrong with one annotation's ``segmentation`` for an image of ``hw`` = (H, W) (a zero side:
    size unknown, not compared); ``None`` when it decodes."""
    if isinstance(segmentation, list):
        return _polygon_problem(segmentation, hw)
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, hw)
    return f"is a {type(segmentation).__name__}, not polygons (a list) or an RLE (a dict)"


def _to_rle(segmentation: Any, h: int, w: int) -> dict[str, Any]:
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return mask_utils.encode(np.zeros((h, w, 1), dtype=np.uint8, order="F"))[0]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, h, w)
    counts = segmentation["counts"]
    return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def decode_segmentation(segmentation: Any, h: int, w: int) -> np.ndarray:
    """uint8 [H, W] mask of one checked ``segmentation`` (see :func:`segmentation_problem`)."""
    return mask_utils.decode(_to_rle(segmentation, h, w))


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a bool/uint8 [H, W] mask, ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
