"""torch.export artifacts: an ``ExportedProgram`` of the export wrapper saved as ``.pt2`` (static
shapes), metadata in the archive's extra files. Loaded with ``torch.export.load``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from exporters.archive import read_extra_file
from exporters.backend import Backend, module_backend
from exporters.metadata import EXTRA_FILE, ArtifactMetadata, MetadataError


def export_program(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], path: Path, *,
                   metadata: ArtifactMetadata, strict: bool = False) -> None:
    """Write ``torch.export.export(wrapper, example_inputs)`` to ``path``."""
    program = torch.export.export(wrapper, example_inputs, strict=strict)
    torch.export.save(program, str(path), extra_files={EXTRA_FILE: metadata.to_json()})


def load_program(path: Path, *, device: str = "cpu", **_: object) -> Backend:
    """``torch.export.load``; on a non-CPU ``device`` the program is moved there first."""
    program = torch.export.load(str(path))
    if torch.device(device).type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    module = program.module()
    return module_backend(module, device=device)


def read_program_metadata(path: Path) -> ArtifactMetadata:
    """From the archive's extra file (no deserialisation); ``torch.export.load`` as a fallback."""
    text = read_extra_file(path, EXTRA_FILE)
    if text is None:
        extra = {EXTRA_FILE: ""}
        torch.export.load(str(path), extra_files=extra)
        text = extra[EXTRA_FILE]
    if not text:
        raise MetadataError(f"{path}: no detrtool metadata in this .pt2 file")
    return ArtifactMetadata.from_json(text)
