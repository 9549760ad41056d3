"""TorchScript artifacts: ``torch.jit.script`` of the export wrapper (or ``trace``), metadata in
``_extra_files``. Loaded with ``torch.jit.load``."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from exporters.archive import read_extra_file
from exporters.backend import Backend, module_backend
from exporters.metadata import EXTRA_FILE, ArtifactMetadata, MetadataError

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("script", "trace")


def export_torchscript(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], path: Path, *,
                       metadata: ArtifactMetadata, method: str = "script") -> None:
    """Write ``wrapper`` as TorchScript to ``path``; ``example_inputs`` are used by ``trace`` only."""
    if method not in METHODS:
        raise ValueError(f"unknown TorchScript method {method!r}; choose from {', '.join(METHODS)}")
    if method == "script":
        module = torch.jit.script(wrapper)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            module = torch.jit.trace(wrapper, example_inputs, check_trace=False)
    torch.jit.save(module, str(path), _extra_files={EXTRA_FILE: metadata.to_json()})


def load_torchscript(path: Path, *, device: str = "cpu", **_: object) -> Backend:
    """``torch.jit.load`` onto ``device``; the backend runs under ``torch.inference_mode``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": we know
        module = torch.jit.load(str(path), map_location=device).eval()
    return module_backend(module, device=device)


def read_torchscript_metadata(path: Path) -> ArtifactMetadata:
    """From the archive's extra file (no deserialisation); ``torch.jit.load`` as a fallback."""
    text = read_extra_file(path, EXTRA_FILE)
    if text is None:
        extra = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        text = extra[EXTRA_FILE]
    if not text:
        raise MetadataError(f"{path}: no detrtool metadata in this TorchScript file")
    return ArtifactMetadata.from_json(text)
