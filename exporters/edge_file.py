"""The on-device artifacts (ExecuTorch ``.pte``, LiteRT ``.tflite``): the runtime's own flatbuffer followed by
detrtool's metadata, so the runtime gets back exactly the bytes the converter wrote.

File layout: ``payload | metadata JSON (UTF-8) | footer``, the footer 16 bytes: the JSON's length (uint64,
little-endian) and :data:`MAGIC`. Both runtimes read a flatbuffer from its root offset and ignore bytes
after it, so the file also opens in a stock runtime. Content hash: sha256 of the payload, sealed with every
metadata field (:func:`exporters.metadata.seal`). A truncated file has no footer, a flipped bit changes the
payload's hash or the metadata: either is one line naming the file before any byte reaches a runtime.

The optional ``edge`` extra brings the runtimes; :func:`require` turns a missing one into one line that
says how to install it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import struct
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exporters.artifact_file import ArtifactError, check_sealed, first_line, read_artifact
from exporters.metadata import ArtifactMetadata, MetadataError, strict_json

MAGIC = b"DTRTMETA"
FOOTER = struct.Struct("<Q8s")
INSTALL_HINT = "pip install detrtool[edge]"
#: Largest metadata JSON accepted (class names of a big label set fit many times over).
MAX_METADATA = 1 << 22


class MissingRuntimeError(ArtifactError):
    """The package a format needs is not installed (the ``edge`` extra)."""


def available(module: str) -> bool:
    """Whether ``module`` (``executorch``, ``litert_torch``, ``ai_edge_litert``) can be imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(*modules: str) -> str | None:
    """Why a format's rows cannot run here (``"<module> is not installed (pip install detrtool[edge])"``), or
    None when every module is importable."""
    absent = [m for m in modules if not available(m)]
    return f"{', '.join(absent)} not installed ({INSTALL_HINT})" if absent else None


def require(fmt: str, *modules: str) -> None:
    """:class:`MissingRuntimeError` (one line) when a module ``fmt`` needs is absent."""
    reason = missing(*modules)
    if reason:
        raise MissingRuntimeError(f"the {fmt} format needs the edge extra: {reason}")


def payload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def stamp(payload: bytes, metadata: ArtifactMetadata) -> bytes:
    """``payload`` with ``metadata`` (sealed over the payload's hash) and the footer appended."""
    text = metadata.sealed(payload_digest(payload)).to_json().encode("utf-8")
    return payload + text + FOOTER.pack(len(text), MAGIC)


def split(data: bytes, path: Path, kind: str) -> tuple[bytes, dict[str, Any]]:
    """(payload, metadata fields as written) of a detrtool ``kind`` file; one-line errors naming ``path``."""
    if len(data) < FOOTER.size or data[-len(MAGIC):] != MAGIC:
        raise MetadataError(f"{path}: no detrtool metadata at the end of this {kind} file (truncated, or not "
                            "exported by detrtool)")
    size, _ = FOOTER.unpack(data[-FOOTER.size:])
    if not 0 < size <= min(MAX_METADATA, len(data) - FOOTER.size):
        raise MetadataError(f"{path}: damaged detrtool metadata footer (length {size} for a {len(data)}-byte file)")
    end = len(data) - FOOTER.size
    try:
        fields = strict_json(data[end - size:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetadataError(f"{path}: damaged detrtool metadata ({first_line(exc)})") from None
    if not isinstance(fields, dict):
        raise MetadataError(f"{path}: damaged detrtool metadata (a JSON {type(fields).__name__}, not an object)")
    return data[:end - size], fields


def parse(fields: dict[str, Any], path: Path, fmt: str) -> ArtifactMetadata:
    try:
        metadata = ArtifactMetadata.from_dict(fields)
    except (ValueError, TypeError) as exc:
        raise MetadataError(f"{path}: damaged detrtool metadata ({first_line(exc)})") from None
    if metadata.format != fmt:
        raise MetadataError(f"{path}: the metadata says format {metadata.format!r}, not {fmt}")
    return metadata


def read_edge_metadata(path: Path, *, kind: str, fmt: str) -> ArtifactMetadata:
    """The metadata of a ``kind`` file (not verified against the content: :func:`verified` does that)."""
    return parse(split(read_artifact(path), path, kind)[1], path, fmt)


def verified(path: Path, *, kind: str, fmt: str) -> tuple[bytes, ArtifactMetadata]:
    """The payload, read once, and the metadata, after the recorded hash matched both."""
    payload, fields = split(read_artifact(path), path, kind)
    check_sealed(path, fields=fields, content=payload_digest(payload))
    return payload, parse(fields, path, fmt)


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Converters and runtimes print progress and C++ log lines to stdout/stderr (file descriptors 1 and 2,
    below Python); keep them out of the user's terminal while the block runs. Python exceptions still
    carry their messages."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.flush()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            with contextlib.ExitStack() as stack:
                for fd in (1, 2):
                    with contextlib.suppress(OSError):
                        saved = os.dup(fd)
                        stack.callback(os.close, saved)
                        stack.callback(os.dup2, saved, fd)
                        null = os.open(os.devnull, os.O_WRONLY)
                        os.dup2(null, fd)
                        os.close(null)
                yield
        finally:
            logging.disable(previous)

