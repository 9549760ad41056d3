"""The output folder of a run: one run at a time (a lock), writable, and cleared of killed runs' temp files.

The lock is ``fcntl.flock`` on ``OUTPUT_DIR/.detrtool-train.lock``, held for the whole run by the main
process. The OS releases it when the process ends, however it ends (``kill -9`` included), so a dead run
never leaves a stale lock. The file holds the holder's pid, written in place (not through an atomic
rename, which would put a new, unlocked file at the path); it is the one file training does not write
through :mod:`detr_core.atomic`, but opened by its rule all the same (``O_NOFOLLOW``: a link there is
refused, its target untouched). It stays in the folder after the run: unlinking it would let a run that
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

from detr_core.atomic import (
    WriteRefused,
    file_identity,
    make_folder,
    open_no_follow,
    refuse_link,
    sweep_temps,
)

log = logging.getLogger(__name__)

LOCK_NAME = ".detrtool-train.lock"
#: The fixed names a run writes in its folder: a link at any of them is refused at the start, not after an epoch.
RUN_FILES = ("checkpoint.pth", "config.yaml", "log.jsonl", "log.jsonl.old")


class OutputDirError(RuntimeError):
    """The output folder cannot take this run (locked by another run, read-only); the message says why."""


@contextlib.contextmanager
def locked_output_dir(out: Path) -> Iterator[Path]:
    """Create ``out`` if needed and hold its lock until the block ends; then remove orphaned temp files."""
    out = Path(out)
    fd = _open_lock(out)
    try:
        _take_lock(fd, out)
        _refuse_links(out)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        remove_orphaned_temps(out)
        yield out
    finally:
        os.close(fd)  # closing releases the lock


def _open_lock(out: Path) -> int:
    try:
        make_folder(out)
        return open_no_follow(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    except WriteRefused as exc:
        raise OutputDirError(f"--output-dir {out}: {exc}") from None
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise OutputDirError(f"--output-dir {out}: cannot write there: {reason}") from None


def check_inputs_kept(out: Path, inputs: dict[str, str | None]) -> None:
    """A run never writes over the weights it starts from: ``inputs`` (option -> path: ``--init``,
    ``--frozen-weights``, ``--backbone-weights``) may not be a checkpoint the run writes in ``out``
    (``checkpoint.pth``, ``checkpoint_NNNN.pth``); ``--resume`` is meant to be replaced and is not given."""
    written = [out / "checkpoint.pth", *Path(out).glob("checkpoint_[0-9][0-9][0-9][0-9].pth")]
    keys = {k: v for k, v in {file_identity(p): p for p in written}.items() if k is not None}
    for option, path in inputs.items():
        if path and (key := file_identity(Path(path))) is not None and key in keys:
            raise OutputDirError(f"{option} {path} is {keys[key]}, which this run replaces: copy it elsewhere or "
                                 "choose another --output-dir")


def _refuse_links(out: Path) -> None:
    for name in RUN_FILES:
        try:
            refuse_link(out / name)
        except WriteRefused as exc:
            raise OutputDirError(f"--output-dir {out}: {exc}") from None


def _take_lock(fd: int, out: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise OutputDirError(f"--output-dir {out} is in use by another detrtool train (pid {_holder(fd)}): wait "
                             "for it to end or choose another folder") from None


def _holder(fd: int) -> str:
    """The pid the lock file holds, read from the descriptor already open (not the path again)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def remove_orphaned_temps(out: Path) -> int:
    """Delete the temp files and staging folders that killed processes left directly in ``out``: only names
    carrying :mod:`detr_core.atomic`'s marker whose pid no longer runs (a user's ``.notes.tmp`` stays, so
    does a live process's temp); returns how many."""
    sizes = {e.name: e.stat(follow_symlinks=False).st_size for e in os.scandir(out)}
    orphans = sweep_temps(out)
    size = sum(sizes.get(p.name, 0) for p in orphans)
    if orphans:
        log.info("%s: removed %d temp file(s) of an interrupted run (%.1f MB)", out, len(orphans), size / 1e6)
    return len(orphans)
