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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detr_core.atomic import atomic_write_text
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
        """An artifact made from ``source`` by ``make(source_path, out_path)`` (e.g. quantisation)."""
        key = options_key(source=str(source.path), name=name, options=options)
        return self.cached(f"{name}-{key}", f"model{suffix}", lambda out: make(source.path, out))

    def cached(self, key: str, filename: str, make: Callable[[Path], None]) -> Artifact:
        """``ROOT/key/filename``, made by ``make(path)`` unless it is already there."""
        folder = self.root / key
        path = folder / filename
        seconds = _recorded_seconds(folder) if path.exists() else None
        if seconds is not None:
            logger.info("using cached %s", path)
            return Artifact(path, seconds)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
        try:
            start = time.perf_counter()
            make(tmp / filename)
            seconds = time.perf_counter() - start
            atomic_write_text(tmp / _RECORD, json.dumps({"seconds": seconds, "file": filename}))
            if folder.exists():
                shutil.rmtree(folder)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("made %s in %.1f s", path, seconds)
        return Artifact(path, seconds)


def _recorded_seconds(folder: Path) -> float | None:
    """The export time ``export.json`` records; None (make the artifact anew) when absent or unreadable."""
    try:
        return float(json.loads((folder / _RECORD).read_text()).get("seconds", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
