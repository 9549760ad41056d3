"""An artifact's bytes, read once, and its content hash.

Loaders read the whole file once (:func:`read_artifact`) and check, hash and deserialise those same
bytes, so the file cannot change between the check and the load. The content hash (``content_sha256``
in the metadata) covers the artifact without its own metadata:

- zip archives (TorchScript ``.ts``, torch.export ``.pt2``): sha256 over every member's name and bytes
  in name order, except ``extra/detrtool.json`` (the metadata) and ``.data/serialization_id`` (which
  PyTorch derives from all members, the metadata included);
- ONNX: sha256 of the model proto with the ``detrtool.*`` metadata props removed, serialised
  deterministically;
- OpenVINO IR (two files, ``.xml`` + ``.bin``): sha256 of the ``.xml`` with its metadata entry blanked,
  then of the ``.bin`` (:func:`exporters.openvino.ir_digest`). Such an artifact is serialised as a
  :class:`MultiFileArtifact` and written as a pair by :func:`companion_files`.

A mismatch at load time is one :class:`IntegrityError` line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from detr_core.errors import first_line  # noqa: F401  (re-exported to the format modules)

logger = logging.getLogger(__name__)

METADATA_MEMBER = "extra/detrtool.json"
_UNHASHED = (METADATA_MEMBER, ".data/serialization_id")
MISMATCH = "content hash mismatch: the file was modified or corrupted after export"


class ArtifactError(ValueError):
    """An artifact file that cannot be used; the message is one line naming the file."""


class IntegrityError(ArtifactError):
    """The artifact's content does not match the hash recorded at export."""


def read_artifact(path: Path) -> bytes:
    """The file's bytes; :class:`ArtifactError` when it cannot be read or is empty."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the artifact ({exc.strerror or first_line(exc)})") from None
    if not data:
        raise ArtifactError(f"{path}: the artifact file is empty")
    return data


def open_zip(data: bytes, path: Path) -> zipfile.ZipFile:
    """The zip archive in ``data``; :class:`ArtifactError` when it is not one."""
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a valid zip archive ({first_line(exc)})") from None


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
    names = [n for n in archive.namelist() if member_suffix(n) == METADATA_MEMBER and n.count("/") == 2]
    if not names:
        return None
    try:
        return read_member(archive, names[0], path).decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: damaged metadata member {names[0]} (not UTF-8)") from None


def check_digest(path: Path, *, recorded: str | None, actual: str) -> None:
    """:class:`IntegrityError` when ``actual`` differs from the hash recorded at export; a warning when
    the artifact records none (exported before detrtool recorded content hashes)."""
    if not recorded:
        logger.warning("%s: no content hash recorded (exported by an older detrtool); integrity not verified",
                       path)
        return
    if recorded != actual:
        raise IntegrityError(f"{path}: {MISMATCH}")


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
