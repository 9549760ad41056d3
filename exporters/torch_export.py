"""torch.export artifacts: an ``ExportedProgram`` of the export wrapper saved as ``.pt2`` (static
or dynamic shapes), metadata in the archive's extra files. Loaded with ``torch.export.load``, but only after
:func:`exporters.pt2_safety.check_pt2` has passed the very bytes it loads (no code from the file runs)
and the content hash recorded at export matches them."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor, nn

from exporters.archive import archive_metadata, stamped_archive, verified_archive
from exporters.artifact_file import ArtifactError, first_line
from exporters.backend import Backend, module_backend
from exporters.metadata import ArtifactMetadata
from exporters.pt2_safety import check_pt2
from exporters.wrapper import dynamic_shapes


def export_program(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], *, metadata: ArtifactMetadata,
                   strict: bool = False) -> bytes:
    """``torch.export.export(wrapper, example_inputs)`` serialised (in memory) with ``metadata`` and its
    content hash; with ``metadata.dynamic`` batch, height and width are ``torch.export.Dim`` s (the
    program then holds symbolic expressions and guards, which the safety gate checks against its grammar)."""
    shapes = dynamic_shapes(metadata.input_names, metadata.dynamic_limits) if metadata.dynamic else None
    program = torch.export.export(wrapper, example_inputs, strict=strict, dynamic_shapes=shapes)

    def save(extra_files: dict[str, str]) -> bytes:
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files=extra_files)
        return buffer.getvalue()

    return stamped_archive(save, metadata)


def load_program(path: Path, *, device: str = "cpu", **_: object) -> Backend:
    """The checked program (see module doc); on a non-CPU ``device`` it is moved there first."""
    data, metadata = verified_archive(path, kind=".pt2", check=check_pt2)
    try:
        program = torch.export.load(io.BytesIO(data))
        if torch.device(device).type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        module = program.module()
    except Exception as exc:  # noqa: BLE001 - any failure of torch's reader is one line
        raise ArtifactError(f"{path}: cannot load the torch.export program ({first_line(exc)})") from None
    return module_backend(module, device=device, metadata=metadata)


def read_program_metadata(path: Path) -> ArtifactMetadata:
    """From the archive's extra file, without deserialising the program."""
    return archive_metadata(path, kind=".pt2")
