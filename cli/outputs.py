"""Output folders checked before any work starts: a read-only, full or non-folder ``--output-dir`` is one
error line naming the option and the folder, not a failure after minutes of computing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click


def writable_dir(path: str | Path, *, option: str = "--output-dir") -> Path:
    """Create ``path`` if needed and prove 4 KiB can be written in it (a probe file, removed again)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise click.ClickException(f"{option} {path}: cannot write there ({reason})") from None
    return path


def _probe(folder: Path) -> None:
    """Write 4 KiB (a full disk refuses data, not an empty file) to a temp file in ``folder``; remove it."""
    fd, probe = tempfile.mkstemp(prefix=".detrtool-probe.", dir=folder)
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)
