"""Error text for one-line messages: every layer that turns an exception into a line uses these."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``str(exc)`` (colour codes removed); the exception's type name when
    it has no message."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def typed_line(exc: BaseException) -> str:
    """``<ExceptionType>: <first line>``, for failures nothing upstream foresaw (a bench row, the CLI); a
    ``MemoryError`` (no message: it read ``MemoryError: MemoryError``) says what it means."""
    if isinstance(exc, MemoryError):
        detail = first_line(exc)
        return ("out of memory (MemoryError" + ("" if detail == type(exc).__name__ else f": {detail}") +
                "): an input asked for more memory than this machine has; check the sizes, counts and ids it gives")
    return f"{type(exc).__name__}: {first_line(exc)}"


#: Control characters -> visible escapes: a file name or JSON string carrying a NUL, a newline or a
#: terminal escape must not break, hide or recolour the one error line that names it.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x00``, ``\\n``, ``\\x1b``)."""
    return text.translate(_ESCAPES)
