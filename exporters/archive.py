"""PyTorch zip archives (TorchScript ``.ts`` and torch.export ``.pt2``): the metadata kept in their extra
files (``<root>/extra/detrtool.json``), read without deserialising the program; writing an archive
stamped with the hash of its content and metadata; reading one whose hash is verified."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporters.artifact_file import (
    ArtifactError,
    archive_digest,
    archive_metadata_text,
    check_sealed,
    first_line,
    open_zip,
    read_artifact,
)
from exporters.metadata import EXTRA_FILE, ArtifactMetadata, MetadataError, strict_json


def stamped_archive(save: Callable[[dict[str, str]], bytes], metadata: ArtifactMetadata) -> bytes:
    """``save(extra_files)`` twice: once to hash the content, once with the hash in the metadata. The
    two serialisations must agree on every hashed member (PyTorch writes deterministically)."""
    first = save({EXTRA_FILE: metadata.to_json()})
    digest = archive_digest(open_zip(first, Path("<export>")), Path("<export>"))
    data = save({EXTRA_FILE: metadata.sealed(digest).to_json()})
    if archive_digest(open_zip(data, Path("<export>")), Path("<export>")) != digest:
        raise ArtifactError(f"{metadata.format}: serialisation is not deterministic; cannot record a content hash")
    return data


def metadata_fields(text: str | None, path: Path, kind: str) -> dict[str, Any]:
    """Every field of ``extra/detrtool.json`` (a key twice is refused); :class:`MetadataError` naming the file."""
    if not text:
        raise MetadataError(f"{path}: no detrtool metadata in this {kind} file (was it exported by detrtool?)")
    try:
        fields = strict_json(text)
    except ValueError as exc:
        raise MetadataError(f"{path}: damaged detrtool metadata ({first_line(exc)})") from None
    if not isinstance(fields, dict):
        raise MetadataError(f"{path}: damaged detrtool metadata (a JSON {type(fields).__name__}, not an object)")
    return fields


def parse_metadata(fields: dict[str, Any], path: Path) -> ArtifactMetadata:
    """:class:`ArtifactMetadata` of ``fields``; :class:`MetadataError` naming the file otherwise."""
    try:
        return ArtifactMetadata.from_dict(fields)
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
    return parse_metadata(metadata_fields(text, path, kind), path)


def verified_archive(path: Path, *, kind: str,
                     check: Callable[[zipfile.ZipFile, Path], None] | None = None) -> tuple[bytes, ArtifactMetadata]:
    """The archive's bytes, read once, and its metadata, after ``check(archive, path)`` and the check of
    the recorded hash against the content and every metadata field."""
    data = read_artifact(path)
    archive = open_zip(data, path)
    if check is not None:
        check(archive, path)
    fields = metadata_fields(archive_metadata_text(archive, path), path, kind)
    check_sealed(path, fields=fields, content=archive_digest(archive, path))
    return data, parse_metadata(fields, path)
