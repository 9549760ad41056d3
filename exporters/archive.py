"""PyTorch zip archives (TorchScript ``.ts`` and torch.export ``.pt2``): the metadata kept in their extra
files (``<root>/extra/detrtool.json``), read without deserialising the program; writing an archive
stamped with its content hash; reading one whose hash is verified."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from pathlib import Path

from exporters.artifact_file import (
    ArtifactError,
    archive_digest,
    archive_metadata_text,
    check_digest,
    first_line,
    open_zip,
    read_artifact,
)
from exporters.metadata import EXTRA_FILE, ArtifactMetadata, MetadataError


def stamped_archive(save: Callable[[dict[str, str]], bytes], metadata: ArtifactMetadata) -> bytes:
    """``save(extra_files)`` twice: once to hash the content, once with the hash in the metadata. The
    two serialisations must agree on every hashed member (PyTorch writes deterministically)."""
    first = save({EXTRA_FILE: metadata.to_json()})
    digest = archive_digest(open_zip(first, Path("<export>")), Path("<export>"))
    stamped = dataclasses.replace(metadata, content_sha256=digest)
    data = save({EXTRA_FILE: stamped.to_json()})
    if archive_digest(open_zip(data, Path("<export>")), Path("<export>")) != digest:
        raise ArtifactError(f"{metadata.format}: serialisation is not deterministic; cannot record a content hash")
    return data


def parse_metadata(text: str | None, path: Path, kind: str) -> ArtifactMetadata:
    """Metadata from ``extra/detrtool.json``'s text; :class:`MetadataError` naming the file otherwise."""
    if not text:
        raise MetadataError(f"{path}: no detrtool metadata in this {kind} file (was it exported by detrtool?)")
    try:
        return ArtifactMetadata.from_json(text)
    except (ValueError, TypeError) as exc:
        raise MetadataError(f"{path}: damaged detrtool metadata ({first_line(exc)})") from None


def archive_metadata(path: Path, *, kind: str) -> ArtifactMetadata:
    """The metadata of the archive at ``path`` (no deserialisation of the program)."""
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive_metadata_text(archive, path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise MetadataError(f"{path}: not a valid {kind} archive ({first_line(exc)})") from None
    return parse_metadata(text, path, kind)


def verified_archive(path: Path, *, kind: str,
                     check: Callable[[zipfile.ZipFile, Path], None] | None = None) -> tuple[bytes, ArtifactMetadata]:
    """The archive's bytes, read once, and its metadata, after ``check(archive, path)`` and the
    content-hash check."""
    data = read_artifact(path)
    archive = open_zip(data, path)
    if check is not None:
        check(archive, path)
    metadata = parse_metadata(archive_metadata_text(archive, path), path, kind)
    check_digest(path, recorded=metadata.content_sha256, actual=archive_digest(archive, path))
    return data, metadata
