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
import shutil
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
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
            # a write() that failed (disk full) names no file, a failed rename (onto a folder) the temp file:
            # name the target the user asked for
            exc.filename, exc.filename2 = str(path), None
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


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder to fill with ``path``'s new entries (files, sub-folders). On a normal
    exit they are renamed into ``path`` (created when missing), each replacing the entry of that name, the
    old ones kept until every new one is in place and then removed; ``path``'s other entries stay. On any
    exception (disk full, Ctrl-C) the staging folder is removed and ``path`` is left as it was, byte for
    byte (a folder that did not exist is not left behind, empty). An ``OSError`` names the final file, not
    the staging one. The staging folder lies inside ``path`` (or next to it when ``path`` does not exist
    yet), on the same filesystem, so every swap is a rename."""
    path = Path(path)
    created = _make_parents(path.parent) if not path.is_dir() else []
    where = path if path.is_dir() else path.parent
    _remove_orphan_stages(where, path.name)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=where))
    new, old = stage / "new", stage / "old"
    try:
        new.mkdir()
        old.mkdir()  # both made up front: a full disk may refuse a folder later
        yield new
        _swap_in(new, old, path)
    except BaseException as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            exc.filename = str(exc.filename).replace(str(new), str(path))
        shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    _fsync_dir(path.parent)


def _swap_in(new: Path, old: Path, path: Path) -> None:
    """Rename ``new``'s entries into ``path`` (``path`` itself when it does not exist), the replaced ones
    moved to ``old``; any failure puts every entry back as it was."""
    if not path.is_dir():
        os.rename(new, path)
        return
    done: list[str] = []
    try:
        for entry in sorted(e.name for e in new.iterdir()):
            if os.path.lexists(path / entry):
                os.rename(path / entry, old / entry)
            done.append(entry)
            os.rename(new / entry, path / entry)
        _fsync_dir(path)
    except BaseException:
        for entry in reversed(done):
            if not os.path.lexists(new / entry) and os.path.lexists(path / entry):
                os.rename(path / entry, new / entry)
            if os.path.lexists(old / entry):
                os.rename(old / entry, path / entry)
        raise


def _make_parents(folder: Path) -> list[Path]:
    """``folder.mkdir(parents=True)``; returns the folders it created (outermost first)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _remove_orphan_stages(where: Path, name: str) -> None:
    """Remove staging folders of ``name`` left in ``where`` by processes that no longer run."""
    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)\.[^.]+\.tmp$")
    for candidate in where.glob(f".{glob_escape(name)}.*.tmp"):
        match = pattern.match(candidate.name)
        if match and candidate.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(candidate, ignore_errors=True)
