"""The output folder of a run: one run at a time (a lock), writable, and cleared of killed runs' temp files.

The lock is ``fcntl.flock`` on ``OUTPUT_DIR/.detrtool-train.lock``, held for the whole run by the main
process. The OS releases it when the process ends, however it ends (``kill -9`` included), so a dead run
never leaves a stale lock. The file holds the holder's pid, written in place (not through an atomic
rename, which would put a new, unlocked file at the path); it is the one file training does not write
through :mod:`detr_core.atomic`. It stays in the folder after the run: unlinking it would let a run that
opened the old file and one that creates a new one both hold "the" lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".detrtool-train.lock"


class OutputDirError(RuntimeError):
    """The output folder cannot take this run (locked by another run, read-only); the message says why."""


@contextlib.contextmanager
def locked_output_dir(out: Path) -> Iterator[Path]:
    """Create ``out`` if needed and hold its lock until the block ends; then remove orphaned temp files."""
    out = Path(out)
    fd = _open_lock(out)
    try:
        _take_lock(fd, out)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        remove_orphaned_temps(out)
        yield out
    finally:
        os.close(fd)  # closing releases the lock


def _open_lock(out: Path) -> int:
    try:
        out.mkdir(parents=True, exist_ok=True)
        return os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise OutputDirError(f"--output-dir {out}: cannot write there: {reason}") from None


def _take_lock(fd: int, out: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise OutputDirError(f"--output-dir {out} is in use by another detrtool train (pid {_holder(out)}): wait "
                             "for it to end or choose another folder") from None


def _holder(out: Path) -> str:
    try:
        return (out / LOCK_NAME).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def remove_orphaned_temps(out: Path) -> int:
    """Delete ``.NAME.*.tmp`` files (``detr_core.atomic`` temps of killed runs) directly in ``out``; returns
    how many. Only call it holding the folder's lock: a live run's temp file would go too."""
    orphans = [p for p in Path(out).glob(".*.tmp") if p.is_file()]
    size = sum(p.stat().st_size for p in orphans)
    for path in orphans:
        path.unlink(missing_ok=True)
    if orphans:
        log.info("%s: removed %d temp file(s) of an interrupted run (%.1f MB)", out, len(orphans), size / 1e6)
    return len(orphans)
