"""An artifact's bytes, read once, and its content hash.

Loaders read the whole file once (:func:`read_artifact`) and check, hash and deserialise those same
bytes, so the file cannot change between the check and the load. The recorded hash (``content_sha256``
in the metadata) is :func:`exporters.metadata.seal` of a content digest and of every other metadata field
(so an edited class name, mean, size or output name is refused like an edited weight). The content digest
covers the artifact without its own metadata:

- zip archives (TorchScript ``.ts``, torch.export ``.pt2``): sha256 over every member's name and bytes
  in name order, except ``extra/detrtool.json`` (the metadata) and ``.data/serialization_id`` (which
  PyTorch derives from all members, the metadata included);
- ONNX: sha256 of the model proto with the ``detrtool.*`` metadata props removed, serialised
  deterministically;
- OpenVINO IR (two files, ``.xml`` + ``.bin``): sha256 of the ``.xml`` with its metadata entry blanked,
  then of the ``.bin`` (:func:`exporters.openvino.ir_digest`). Such an artifact is serialised as a
  :class:`MultiFileArtifact` and written as a pair by :func:`companion_files`.

A mismatch at load time, or a missing or empty hash, is one :class:`IntegrityError` line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detr_core.errors import first_line  # noqa: F401  (re-exported to the format modules)
from detr_core.input_files import read_regular_bytes

METADATA_MEMBER = "extra/detrtool.json"
_UNHASHED = (METADATA_MEMBER, ".data/serialization_id")
MISMATCH = "content hash mismatch: the file (content or metadata) was modified or corrupted after export"
NO_HASH = "no content hash: exported by an older detrtool or stripped; re-export it"
CONTENT_ONLY = "its hash covers the content but not the metadata: exported by an older detrtool; re-export it"


class ArtifactError(ValueError):
    """An artifact file that cannot be used; the message is one line naming the file."""


class IntegrityError(ArtifactError):
    """The artifact's content does not match the hash recorded at export."""


def read_artifact(path: Path) -> bytes:
    """The file's bytes; :class:`ArtifactError` when it cannot be read or is empty."""
    try:
        data = read_regular_bytes(path)  # a fifo or a device (a planted cache entry) would never end
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the artifact ({exc.strerror or first_line(exc)})") from None
    if not data:
        raise ArtifactError(f"{path}: the artifact file is empty")
    return data


def open_zip(data: bytes, path: Path) -> zipfile.ZipFile:
    """The zip archive in ``data``; :class:`ArtifactError` when it is not one or holds a member name twice
    (Python's reader and PyTorch's would then disagree on which copy is the member)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a valid zip archive ({first_line(exc)})") from None
    names = archive.namelist()
    if len(set(names)) != len(names):
        twice = sorted(n for n in set(names) if names.count(n) > 1)[0]
        raise ArtifactError(f"{path}: archive member {twice} appears twice; refusing the archive")
    return archive


def member_suffix(name: str) -> str:
    """A member's name below the archive's root folder (``archive/extra/x`` -> ``extra/x``)."""
    return name.split("/", 1)[1] if "/" in name else name


def read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """One member's bytes (CRC-checked); :class:`ArtifactError` naming it when damaged."""
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise ArtifactError(f"{path}: damaged archive member {name} ({first_line(exc)})") from None


def archive_digest(archive: zipfile.ZipFile, path: Path) -> str:
    """sha256 over the name and bytes of every member but the metadata, in name order."""
    digest = hashlib.sha256()
    for name in sorted(archive.namelist()):
        if member_suffix(name) in _UNHASHED:
            continue
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(read_member(archive, name, path)).digest())
    return digest.hexdigest()


def archive_metadata_text(archive: zipfile.ZipFile, path: Path) -> str | None:
    """The text of the archive's ``extra/detrtool.json``; None when absent."""
    names = [n for n in archive.namelist() if member_suffix(n) == METADATA_MEMBER]
    if not names:
        return None
    if len(names) > 1 or names[0].count("/") != 2:
        raise ArtifactError(f"{path}: metadata member {names[-1]} where one {METADATA_MEMBER} below the archive's "
                            "root belongs; refusing the archive")
    try:
        return read_member(archive, names[0], path).decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: damaged metadata member {names[0]} (not UTF-8)") from None


def check_digest(path: Path, *, recorded: object, actual: str) -> None:
    """:class:`IntegrityError` when the artifact records no hash (an older detrtool, or stripped: nothing
    to verify, so it is not run) or one that differs from ``actual``."""
    if not recorded or not isinstance(recorded, str):
        raise IntegrityError(f"{path}: {NO_HASH}")
    if recorded != actual:
        raise IntegrityError(f"{path}: {MISMATCH}")


def check_sealed(path: Path, *, fields: dict[str, Any], content: str) -> None:
    """The recorded ``content_sha256`` of the metadata ``fields`` (as read from the file, every field) must be
    :func:`exporters.metadata.seal` of ``content`` (the content digest) and those fields."""
    from exporters.metadata import HASH_FIELD, seal

    if fields.get(HASH_FIELD) == content:
        raise IntegrityError(f"{path}: {CONTENT_ONLY}")
    check_digest(path, recorded=fields.get(HASH_FIELD), actual=seal(content, fields))


@dataclass(frozen=True)
class MultiFileArtifact:
    """An artifact of several files: ``main`` (the file named by the user) and ``companions``, keyed by
    the suffix that replaces the main file's (OpenVINO: ``{".bin": weights}``)."""

    main: bytes
    companions: dict[str, bytes] = field(default_factory=dict)


@contextlib.contextmanager
def companion_files(tmp: Path, final: Path, data: bytes | MultiFileArtifact) -> Iterator[bytes]:
    """Write ``data``'s companions as fresh temp files beside ``tmp`` (``tmp.with_suffix(s)``, where a
    loader given ``tmp`` looks for them) and yield the main file's bytes; on a normal exit each companion
    is fsync'ed and renamed to ``final.with_suffix(s)``, on any exception removed (``final``'s companions
    untouched). Plain bytes pass through. Use inside :func:`detr_core.atomic.atomic_output` so that the
    main file is renamed last: a kill between the renames leaves a pair whose content hash disagrees."""
    if not isinstance(data, MultiFileArtifact):
        yield data
        return
    written: list[tuple[Path, Path]] = []
    try:
        for suffix, blob in data.companions.items():
            written.append((tmp.with_suffix(suffix), final.with_suffix(suffix)))
            _write_fresh(written[-1][0], blob, final=written[-1][1])
        yield data.main
        for temp, target in written:
            os.replace(temp, target)
    except BaseException:
        for temp, _ in written:
            temp.unlink(missing_ok=True)
        raise


def artifact_files(path: Path) -> list[Path]:
    """The files of the artifact at ``path``: itself, and for an OpenVINO ``.xml`` its ``.bin``."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [path]


def _write_fresh(path: Path, blob: bytes, *, final: Path) -> None:
    """``blob`` into the new file ``path``, fsync'ed; an ``OSError`` names ``final``."""
    try:
        with open(path, "xb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from None
