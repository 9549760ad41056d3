"""Canvas sizes as users write them (``800x1333``): parsed and range-checked without importing torch, so the
CLI refuses a bad ``--input-size`` at once."""

from __future__ import annotations

MIN_SIDE, MAX_SIDE = 32, 16384


def parse_hw(text: str) -> tuple[int, int]:
    """``"800x1333"`` -> ``(800, 1333)`` (height x width, ASCII digits, each side
    :data:`MIN_SIDE`..:data:`MAX_SIDE`); ``ValueError`` otherwise."""
    parts = [p.strip() for p in str(text).strip().lower().split("x")]
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"expected HEIGHTxWIDTH such as 800x1333 (digits 0-9), got {text!r}")
    h, w = int(parts[0]), int(parts[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"HEIGHTxWIDTH must be positive, got {text!r}")
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise ValueError(f"each side of HEIGHTxWIDTH must be {MIN_SIDE}..{MAX_SIDE} pixels (the minimum is the "
                         f"backbone's stride), got {text!r}")
    return h, w
