"""The loader's box fix-ups as one rule, shared by ``data check`` (which counts them as warnings) and
``data voc2coco`` (which applies them to the JSON it writes, and counts them the same way).

A box ``(x1, y1, x2, y2)`` in 0-based pixel-edge coordinates is

- dropped when a coordinate is NaN/inf (:data:`FIX_NONFINITE`) or it has zero or negative width or height,
  e.g. VOC ``xmin > xmax`` (:data:`FIX_DEGENERATE`);
- clipped to the image when it exceeds it (:data:`FIX_CLIPPED`), and dropped when nothing is left
  (:data:`FIX_DEGENERATE` as well).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FIX_NONFINITE = "box with NaN/inf coordinates dropped"
FIX_DEGENERATE = "zero-size or negative box dropped"
FIX_CLIPPED = "out-of-bounds box clipped to the image"

XYXY = tuple[float, float, float, float]


@dataclass(frozen=True)
class BoxVerdict:
    """What the loader makes of a box: ``box`` (clipped) or None when dropped, and each fix-up applied
    as ``(fix-up, detail)``."""

    box: XYXY | None
    fixups: tuple[tuple[str, str], ...] = ()


def _clip(box: XYXY, hw: tuple[int, int]) -> XYXY:
    x1, y1, x2, y2 = box
    return max(x1, 0.0), max(y1, 0.0), min(x2, float(hw[1])), min(y2, float(hw[0]))


def inspect_xyxy(box: XYXY, hw: tuple[int, int] | None) -> BoxVerdict:
    """Apply the rule above; ``hw`` (image height, width) None or with a 0 skips the clipping."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return BoxVerdict(None, ((FIX_NONFINITE, "box has NaN/inf coordinates"),))
    if x2 <= x1 or y2 <= y1:
        return BoxVerdict(None, ((FIX_DEGENERATE, f"box has zero or negative size ({x2 - x1:g}x{y2 - y1:g})"),))
    if not hw or not all(hw) or (x1 >= 0 and y1 >= 0 and x2 <= hw[1] and y2 <= hw[0]):
        return BoxVerdict(box)
    clipped = (FIX_CLIPPED, f"box x1,y1,x2,y2={[round(v, 2) for v in box]} exceeds the {hw[0]}x{hw[1]} image")
    inside = _clip(box, hw)
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        return BoxVerdict(None, (clipped, (FIX_DEGENERATE, "box lies entirely outside the image")))
    return BoxVerdict(inside, (clipped,))
