"""TorchScript artifacts: ``torch.jit.script`` of the export wrapper (or ``trace``), metadata in
``_extra_files``. Serialised in memory (a full disk is then an ``OSError`` of the file write, not an
abort inside PyTorch's C++ writer); loaded with ``torch.jit.load`` from the bytes whose content hash
was verified, and refused before it runs when a graph calls an operator outside :mod:`exporters.op_policy`."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from exporters.archive import archive_metadata, stamped_archive, verified_archive
from exporters.artifact_file import ArtifactError, first_line
from exporters.backend import Backend, module_backend
from exporters.format_options import TORCHSCRIPT_METHODS as METHODS
from exporters.metadata import ArtifactMetadata
from exporters.op_policy import check_torchscript, check_torchscript_code

logger = logging.getLogger(__name__)



def export_torchscript(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], *, metadata: ArtifactMetadata,
                       method: str = "script") -> bytes:
    """``wrapper`` as TorchScript bytes with ``metadata`` and its content hash; ``example_inputs`` are
    used by ``trace`` only."""
    if method not in METHODS:
        raise ValueError(f"unknown TorchScript method {method!r}; choose from {', '.join(METHODS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.* is deprecated": we know
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        module = torch.jit.script(wrapper) if method == "script" else \
            torch.jit.trace(wrapper, example_inputs, check_trace=False)

    def save(extra_files: dict[str, str]) -> bytes:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(module, buffer, _extra_files=extra_files)
        return buffer.getvalue()

    return stamped_archive(save, metadata)


def load_torchscript(path: Path, *, device: str = "cpu", **_: object) -> Backend:
    """``torch.jit.load`` onto ``device`` of the verified bytes (no ``__setstate__`` in its code), then
    every graph checked against :mod:`exporters.op_policy` before any method runs; runs under
    ``torch.inference_mode``."""
    data, metadata = verified_archive(path, kind="TorchScript", check=check_torchscript_code)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": we know
            module = torch.jit.load(io.BytesIO(data), map_location=device)
    except Exception as exc:  # noqa: BLE001 - any failure of the TorchScript reader is one line
        raise ArtifactError(f"{path}: cannot load the TorchScript module ({first_line(exc)})") from None
    check_torchscript(module, path)
    return module_backend(module.eval(), device=device, metadata=metadata)


def read_torchscript_metadata(path: Path) -> ArtifactMetadata:
    """From the archive's extra file, without deserialising the module."""
    return archive_metadata(path, kind="TorchScript")
