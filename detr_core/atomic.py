"""Atomic file writes: a temp file in the target's folder, flushed and fsync'ed, then renamed over it.

A kill at any moment leaves either the old file or the new one, never a torn one; an exception (disk
full, a refused validation, Ctrl-C) removes the temp file and leaves the target as it was. Temp files
are named ``.<name>.<pid>.<random>.tmp<suffix>``: one left by a killed process (its pid gone) is removed
by the next atomic write to the same target.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *, binary: bool = True) -> Path:
    """Call ``write(handle)`` on a temp file next to ``path``, fsync it, rename it to ``path``."""
    with atomic_output(path) as tmp, tmp.open("wb" if binary else "w") as handle:
        write(handle)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_output(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temp path next to ``path`` (ending with ``suffix``, for libraries that read the
    format from the name) for the caller to write and check; on a normal exit it is fsync'ed and
    renamed over ``path``, on any exception (KeyboardInterrupt included) it is removed and ``path``
    is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, _mode_for(path))
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def probe_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove 4 KiB can be written in it (a full disk refuses data, not an
    empty file) with a probe file, removed again; ``OSError`` (read-only, full, not a folder) otherwise."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".detrtool-probe.", dir=folder)
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)
    return folder


def remove_orphans(path: str | Path) -> list[Path]:
    """Remove the temp files of ``path`` left by processes that no longer run; returns them."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)\.[^.]+\.tmp")
    removed = []
    for candidate in path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"):
        match = pattern.match(candidate.name)
        if match and not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mode_for(path: Path) -> int:
    """The permissions ``path`` has, or a new file's (0666 less the umask): mkstemp's 0600 would
    otherwise make every rewritten file private."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems refuse to open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
