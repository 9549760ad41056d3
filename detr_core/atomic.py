"""Atomic file writes: a temp file in the target's folder, flushed and fsync'ed, then renamed over it.

A kill at any moment leaves either the old file or the new one, never a torn one; an exception (disk
full, a refused validation, Ctrl-C) removes the temp file and leaves the target as it was.

The write rule (every file detrtool writes, appends to or locks goes through this module):

- **No link is followed.** A symbolic link at the path a write, an append or a lock would open is refused
  (:class:`WriteRefused`, naming the link) — never written through, never replaced. A folder the user names
  may be a link; what detrtool creates or replaces inside it is checked.
- **Temp names carry a marker**: ``.NAME.detrtool-<pid>-<random>.tmp[SUFFIX]`` for files and staging
  folders, ``detrtool-<purpose>.detrtool-<pid>-<random>.tmp`` for temp folders in the system's temp
  folder. A name that would pass the file system's 255-byte limit has ``NAME`` shortened (its start and a
  hash of the whole name).
- **Only marked names whose pid is dead are swept** (:func:`remove_orphans`, :func:`sweep_temps`,
  :func:`temp_folder`): a user's file is never removed, whatever it is called, nor a live run's temp.
- A path whose parent is a file is one line naming that file (:func:`make_folder`), not "File exists".
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

MARKER = "detrtool"
NAME_MAX = 255  #: bytes in one file name (ext4, xfs, btrfs, tmpfs)
#: A marked temp name: LABEL.detrtool-PID-RANDOM.tmp, then the suffix a library may need (``.onnx``).
_TEMP = re.compile(r"^(?P<label>.+)\.detrtool-(?P<pid>\d+)-(?P<rand>[a-z0-9_]+)\.tmp(?:\.[^.]*)?$", re.DOTALL)


class WriteRefused(OSError):
    """detrtool will not write at ``path`` (a symbolic link, a file where a folder must be, a special file);
    ``str()`` is the whole line, naming the path."""

    def __init__(self, path: str | Path, why: str) -> None:
        super().__init__(f"{path} {why}")
        self.filename = str(path)

    def __str__(self) -> str:
        return str(self.args[0])


def refuse_link(path: str | Path) -> Path:
    """``path`` unless it is a symbolic link (dangling or not): then :class:`WriteRefused` naming it."""
    path = Path(path)
    if os.path.islink(path):
        raise WriteRefused(path, "is a symbolic link: detrtool does not write through links")
    return path


def file_identity(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names (links followed), None when it does not exist: two paths are the
    same file exactly when their identities are equal (how a command proves an output is not one of its inputs)."""
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def make_folder(folder: str | Path) -> list[Path]:
    """``folder.mkdir(parents=True)``; returns the folders it created (outermost first). A file (or a link
    to one) where a folder must be is :class:`WriteRefused` naming it, not ``FileExistsError``."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed((folder, *folder.parents)) if p.exists() and not p.is_dir()), folder)
        raise WriteRefused(blocker, f"is a file, not a folder: cannot create {folder}") from None
    return list(reversed(missing))


def temp_name(name: str, *, suffix: str = "", pid: int | None = None, label: str | None = None) -> tuple[str, str]:
    """(prefix, suffix) for ``mkstemp``/``mkdtemp`` making a marked temp name of ``name``:
    ``.NAME.detrtool-PID-<8 random>.tmpSUFFIX`` within :data:`NAME_MAX` bytes (``NAME`` shortened to its
    start and a hash of the whole name when needed). ``label`` replaces ``.NAME`` (temp folders)."""
    label = f".{_short(name, suffix)}" if label is None else label
    return f"{label}.{MARKER}-{os.getpid() if pid is None else pid}-", f".tmp{suffix}"


def _short(name: str, suffix: str) -> str:
    room = NAME_MAX - len(f"..{MARKER}-4194304-abcdefgh.tmp{suffix}".encode())
    if len(name.encode()) <= room:
        return name
    digest = hashlib.sha256(name.encode(errors="surrogateescape")).hexdigest()[:16]
    start = name.encode(errors="surrogateescape")[:max(0, room - len(digest) - 1)].decode(errors="ignore")
    return f"{start}~{digest}"


def parse_temp(name: str) -> tuple[str, int] | None:
    """(label, pid) of a marked temp name (see the module docstring); None for any other name."""
    match = _TEMP.match(name)
    return (match.group("label"), int(match.group("pid"))) if match else None


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
    is left untouched. A link at ``path`` is refused (:class:`WriteRefused`) before anything is written."""
    path = Path(path)
    make_folder(path.parent)
    refuse_link(path)
    remove_orphans(path)
    prefix, end = temp_name(path.name, suffix=suffix)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=end, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, _mode_for(path))
    try:
        yield tmp
        _fsync_file(tmp)
        refuse_link(path)  # planted while the temp file was written
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
            # a write() that failed (disk full) names no file, a failed rename (onto a folder) the temp file:
            # name the target the user asked for
            exc.filename, exc.filename2 = str(path), None
        raise
    _fsync_dir(path.parent)


def open_no_follow(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags | O_NOFOLLOW)`` for an append or a lock, on a regular file only: a link is
    :class:`WriteRefused` naming it (nothing opened through it), as is a fifo, device or folder."""
    path = Path(path)
    refuse_link(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        if exc.errno == errno.ENXIO:  # a fifo with no reader, opened for writing
            raise WriteRefused(path, "is not a regular file: detrtool writes regular files only") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WriteRefused(path, "is not a regular file: detrtool writes regular files only")
    os.set_blocking(fd, True)
    return fd


def probe_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove 4 KiB can be written in it (a full disk refuses data, not an
    empty file) with a probe file, removed again; ``OSError`` (read-only, full, not a folder) otherwise."""
    folder = Path(folder)
    make_folder(folder)
    sweep_temps(folder, labels=lambda label: label == f".{MARKER}-probe")  # a killed process's probe
    prefix, end = temp_name("probe", label=f".{MARKER}-probe")
    fd, probe = tempfile.mkstemp(prefix=prefix, suffix=end, dir=folder)
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
    labels = {f".{_short(path.name, suffix)}" for suffix in ("", path.suffix)}  # what atomic_output names
    return sweep_temps(path.parent, labels=lambda lab: lab in labels)


def sweep_temps(folder: str | Path, *, labels: Callable[[str], bool] = lambda label: True) -> list[Path]:
    """Remove the marked temp files and staging folders directly in ``folder`` whose label passes ``labels``
    and whose pid no longer runs (see the module docstring); returns them. Nothing else is touched: no
    unmarked name, no link, no live process's temp."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        parsed = parse_temp(entry.name)
        if parsed is None or not labels(parsed[0]) or _alive(parsed[1]) or entry.is_symlink():
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return sorted(removed)


def staging_folder(path: str | Path) -> Path:
    """A new marked folder beside ``path`` (``.NAME.detrtool-PID-RANDOM.tmp``) in which to build ``path`` before
    renaming it into place; the staging folders of dead runs for the same ``path`` are swept first. The
    caller renames it or removes it (a kill leaves it for the next call to sweep)."""
    path = Path(path)
    label = f".{_short(path.name, '')}"
    sweep_temps(path.parent, labels=lambda lab: lab == label)
    prefix, end = temp_name(path.name)
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=end, dir=path.parent))


@contextlib.contextmanager
def temp_folder(purpose: str) -> Iterator[Path]:
    """A private folder in the system's temp folder (``detrtool-PURPOSE.detrtool-PID-RANDOM.tmp``), removed
    when the block ends however it ends; a ``kill -9`` leaves it, and the next :func:`temp_folder` of any
    purpose removes every such folder whose pid no longer runs."""
    where = Path(tempfile.gettempdir())
    sweep_temps(where, labels=lambda label: label.startswith(f"{MARKER}-"))
    prefix, end = temp_name("", label=f"{MARKER}-{purpose}")
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=end, dir=where))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
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
    byte (a folder that did not exist is not left behind, empty). An ``OSError`` names the final file (or
    ``path``), never the staging folder. The staging folder lies inside ``path`` (or next to it when
    ``path`` does not exist yet), on the same filesystem, so every swap is a rename; it carries the temp
    marker, and one a killed run left is removed by the next write of ``path``."""
    path = Path(path)
    if os.path.islink(path) and not path.is_dir():
        refuse_link(path)
    created = make_folder(path.parent) if not path.is_dir() else []
    where = path if path.is_dir() else path.parent
    label = f".{_short(path.name, '')}"
    sweep_temps(where, labels=lambda lab: lab == label)
    stage: Path | None = None
    try:
        prefix, end = temp_name(path.name)
        stage = Path(tempfile.mkdtemp(prefix=prefix, suffix=end, dir=where))
        new, old = stage / "new", stage / "old"
        new.mkdir()
        old.mkdir()  # both made up front: a full disk may refuse a folder later
        yield new
        _swap_in(new, old, path)
    except BaseException as exc:
        if isinstance(exc, OSError):
            _name_target(exc, stage, path)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    _fsync_dir(path.parent)


def _name_target(exc: OSError, stage: Path | None, path: Path) -> None:
    """An error about a file in the staging folder names the final one (``stage/new/x`` -> ``path/x``);
    one about the staging folder itself (or one that failed to be made) names ``path``."""
    for attr in ("filename", "filename2"):
        name = getattr(exc, attr)
        if name is None:
            continue
        name = str(name)
        if stage is not None and name.startswith(str(stage / "new")):
            setattr(exc, attr, str(path) + name[len(str(stage / "new")):])
        elif (stage is not None and name.startswith(str(stage))) or parse_temp(Path(name).name):
            setattr(exc, attr, str(path))


def _swap_in(new: Path, old: Path, path: Path) -> None:
    """Rename ``new``'s entries into ``path`` (``path`` itself when it does not exist), the replaced ones
    moved to ``old``; any failure puts every entry back as it was."""
    if not path.is_dir():
        os.rename(new, path)
        return
    entries = sorted(e.name for e in new.iterdir())
    for entry in entries:
        refuse_link(path / entry)  # before the first rename: a refused swap changes nothing
    done: list[str] = []
    try:
        for entry in entries:
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
