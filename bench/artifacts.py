"""Exported artifacts for the benchmark, cached by the model's weights and the export options.

An artifact lives in ``ROOT/<key>/model<suffix>`` where ``key`` digests the model's state dict and
configuration, the format, its options, the canvas and the batch size; ``export.json`` beside it keeps
the export time, so a cached artifact still reports how long it took to make. Derived artifacts
(quantised or fp16 ONNX) are cached the same way, keyed by their source and their own options.
Files are written into a temporary folder and renamed, so a crash never leaves a half artifact; each file
in it is itself written atomically (:mod:`detr_core.atomic`). A cached artifact is not trusted blindly:
the format loaders verify its content hash, and a ``.pt2`` passes the safety gate, on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detr_core.atomic import atomic_write_text, make_folder, staging_folder
from exporters.artifact_file import ArtifactError
from exporters.metadata import SCHEMA_VERSION

logger = logging.getLogger(__name__)

_RECORD = "export.json"


def model_digest(model: nn.Module) -> str:
    """sha256 (16 hex) of every state-dict tensor's name, dtype, shape and bytes, plus the config."""
    digest = hashlib.sha256(repr(getattr(model, "config", "")).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def options_key(**parts: Any) -> str:
    """A short stable digest of JSON-able keyword parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    """A file on disk, its size and how many seconds making it took (when it was made)."""

    path: Path
    make_seconds: float

    @property
    def size_mb(self) -> float:
        """All of the artifact's files (an OpenVINO ``.xml`` with its ``.bin``)."""
        from exporters.artifact_file import artifact_files

        return sum(f.stat().st_size for f in artifact_files(self.path)) / 2**20


@dataclass
class ArtifactCache:
    """Exports ``model`` through ``exporters.export`` once per format and options, then reuses the file."""

    root: Path
    model: nn.Module
    canvas: tuple[int, int]
    batch_size: int
    _digest: str | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = model_digest(self.model)
        return self._digest

    def export(self, fmt: str, **options: Any) -> Artifact:
        """The artifact of format ``fmt`` (a name of the format table) with ``options``."""
        from exporters import export
        from exporters.formats import get_format

        def make(path: Path) -> None:
            export(self.model, fmt, path, input_size=self.canvas, batch_size=self.batch_size, validate=False,
                   **options)

        return self.cached(self.export_key(fmt, **options), f"model{get_format(fmt).suffix}", make)

    def export_key(self, fmt: str, **options: Any) -> str:
        """The cache folder name of format ``fmt`` exported with ``options``."""
        key = options_key(model=self.digest, format=fmt, options=options, canvas=self.canvas, batch=self.batch_size,
                          schema=SCHEMA_VERSION)  # artifacts of an older metadata schema are made anew
        return f"{fmt}-{key}"

    def derive(self, source: Artifact, name: str, suffix: str, make: Callable[[Path, Path], None],
               **options: Any) -> Artifact:
        """An artifact made from ``source`` by ``make(source_path, out_path)`` (e.g. quantisation).

        Keyed by the source's recorded content hash, ``name`` (the recipe) and ``options`` (e.g. the
        calibration data's digest), and the made artifact records that derivation in its own sealed metadata
        (``extra.derived_from``: :func:`derivation`). A cached one is reused only when it records exactly this
        derivation: an artifact of another model or recipe planted under the key (or left by an older
        detrtool) is made anew, never benchmarked as this model's."""
        from bench.quantize import stamp_derivation

        expected = derivation(source.path, name, options)
        key = options_key(source=str(source.path), name=name, options=options, derived_from=expected)

        def build(out: Path) -> None:
            make(source.path, out)
            stamp_derivation(out, expected)

        return self.cached(f"{name}-{key}", f"model{suffix}", build,
                           check=lambda path: derivation_problem(path, expected))

    def cached(self, key: str, filename: str, make: Callable[[Path], None],
               check: Callable[[Path], str | None] | None = None) -> Artifact:
        """``ROOT/key/filename``, made by ``make(path)`` unless it is already there (and, with ``check``, passes
        it: ``check(path)`` returns why the cached file is not the one wanted, or None)."""
        folder = self.root / key
        path = folder / filename
        seconds = _recorded_seconds(folder) if path.exists() else None
        problem = check(path) if seconds is not None and check is not None else None
        if problem:
            logger.warning("cached %s is not this artifact (%s): making it anew", path, problem)
        elif seconds is not None:
            logger.info("using cached %s", path)
            return Artifact(path, seconds)
        if folder.exists() and _recorded_seconds(folder) is None:
            raise ArtifactError(f"{folder}: in the bench cache but without detrtool's {_RECORD}: not an artifact "
                                "detrtool made, so it is neither used nor removed (move it away, or use another "
                                "--cache-dir)")
        make_folder(self.root)
        tmp = staging_folder(folder)  # marked: a killed run's folder is swept by the next export of this key
        try:
            start = time.perf_counter()
            make(tmp / filename)
            seconds = time.perf_counter() - start
            atomic_write_text(tmp / _RECORD, json.dumps({"seconds": seconds, "file": filename}))
            if folder.exists():  # detrtool's own entry (it has the record) that is stale: replaced
                shutil.rmtree(folder)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("made %s in %.1f s", path, seconds)
        return Artifact(path, seconds)


def derivation(source: Path, name: str, options: dict[str, Any]) -> dict[str, str]:
    """What a derived artifact records about how it was made: the source artifact's content hash (its sealed
    ``content_sha256``, which covers the source model's weights and metadata), the recipe name and a digest of
    the options (recipe text, calibration data)."""
    from exporters.formats import read_metadata

    return {"source_sha256": read_metadata(source).content_sha256, "recipe": name,
            "options": options_key(**options)}


def derivation_problem(path: Path, expected: dict[str, str]) -> str | None:
    """Why the derived artifact ``path`` is not the one ``expected`` describes (None when it records exactly
    that derivation); its content hash is verified again when it is loaded."""
    from exporters.formats import read_metadata

    try:
        recorded = read_metadata(path).extra.get("derived_from")
    except (OSError, ValueError) as exc:
        return f"unreadable metadata: {exc}"
    if recorded == expected:
        return None
    if not isinstance(recorded, dict):
        return "it records no source artifact"
    first = next((k for k in expected if recorded.get(k) != expected[k]), "source_sha256")
    return f"derived_from.{first} is {str(recorded.get(first))[:16]}, wanted {str(expected[first])[:16]}"


def _recorded_seconds(folder: Path) -> float | None:
    """The export time ``export.json`` records; None (make the artifact anew) when absent or unreadable."""
    try:
        return float(json.loads((folder / _RECORD).read_text()).get("seconds", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
