"""One range for every class / category id read from a file or an option.

DETR's class head has ``max id + 1`` rows and every names table is indexed by id, so an id is checked
before anything of its size is built: a class map ``{"circle": 10**23}`` or a YOLO ``names: {10**23: cat}``
once built a names tuple of that length (the OOM killer, or ``MemoryError: MemoryError``), and a negative
id indexed a table from its end. :func:`class_id_problem` is the one check: an integer (not a bool) in
``0..MAX_CLASS_ID``.
"""

from __future__ import annotations

from typing import Any

#: The largest class / category id detrtool accepts (COCO's are 1..90, COCO panoptic's 1..200, LVIS's 1..1203).
MAX_CLASS_ID = 65535


def class_id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a class / category id, or None: an int (not a bool) in 0..:data:`MAX_CLASS_ID`."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "not an integer"
    if not 0 <= value <= MAX_CLASS_ID:
        shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:21] + "..."
        return f"{shown} is outside 0..{MAX_CLASS_ID} (a DETR's class head has max id + 1 rows)"
    return None


def ascii_int(text: str) -> int | None:
    """``text`` (surrounding blanks allowed) as an int when it is ASCII digits only, else None: ``"²"`` and
    ``"٣"`` pass ``str.isdigit`` and then fail or surprise ``int()``."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None
