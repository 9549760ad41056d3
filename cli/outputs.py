"""Output folders checked before any work starts: a read-only, full or non-folder ``--output-dir`` is one
error line naming the option and the folder, not a failure after minutes of computing."""

from __future__ import annotations

import os
from pathlib import Path

import click

from detr_core.atomic import probe_writable


def writable_dir(path: str | Path, *, option: str = "--output-dir") -> Path:
    """Create ``path`` if needed and prove 4 KiB can be written in it (:func:`detr_core.atomic.probe_writable`)."""
    try:
        return probe_writable(path)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise click.ClickException(f"{option} {path}: cannot write there ({reason})") from None
