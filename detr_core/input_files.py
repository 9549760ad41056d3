"""Reading input files by type: only regular files are opened.

A fifo among a dataset's images or labels, a device (a symlink to ``/dev/zero``) or a socket would block
``open()`` forever or never reach its end. Every reader of a file named by the user or by a dataset
(images, label files, annotation JSON, VOC XML, panoptic PNGs, class maps, configs) goes through
:func:`check_regular` (``os.stat`` + ``stat.S_ISREG``, symlinks followed) before it opens the file, or
reads it with :func:`read_regular_bytes` / :func:`read_regular_text`, which also open with ``O_NONBLOCK``
and check the opened descriptor again (a file swapped for a fifo between the check and the open).

The refusal is :class:`NotRegularFileError`, an ``OSError`` whose ``str`` is ``PATH: not a regular file
(a fifo, device or socket)``, so the ``except OSError`` of every reader turns it into its one line.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

NOT_REGULAR = "not a regular file (a fifo, device or socket)"


class NotRegularFileError(OSError):
    """``path`` is a fifo, a device or a socket: refused before it is opened for reading."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(errno.EINVAL, NOT_REGULAR, os.fspath(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def check_regular(path: str | os.PathLike[str]) -> Path:
    """``path`` when it is a regular file (symlinks followed); :class:`NotRegularFileError` for a fifo, a
    device or a socket; the ``OSError`` of ``os.stat`` (``FileNotFoundError`` ...) when it cannot be
    looked at. A folder is left to the caller's open (``IsADirectoryError``)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise NotRegularFileError(path)
    return Path(path)


def _open_fd(path: str | os.PathLike[str]) -> int:
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file ``path``; :class:`NotRegularFileError` for anything else."""
    with os.fdopen(_open_fd(path), "rb") as handle:
        return handle.read()


def read_regular_text(path: str | os.PathLike[str], *, encoding: str | None = None, errors: str | None = None) -> str:
    """The text of the regular file ``path`` (as ``Path.read_text``); :class:`NotRegularFileError` otherwise."""
    with os.fdopen(_open_fd(path), "r", encoding=encoding, errors=errors) as handle:
        return handle.read()
