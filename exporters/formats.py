"""The format table: every export format detrtool writes, how it is written and how it is loaded.

Used by :func:`exporters.export`, :func:`exporters.runtime.load_runtime`, ``detrtool bench`` and
``detrtool predict``. Each :class:`ExportFormat` names its file suffix, its format-specific options
(with defaults and choices), the function that writes it, the loader that gives a backend, and the
metadata reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters import executorch as executorch_format
from exporters import litert as litert_format
from exporters import onnx as onnx_format
from exporters import openvino as openvino_format
from exporters import torch_export, torchscript
from exporters.backend import Backend
from exporters.metadata import ArtifactMetadata, MetadataError


class UnknownFormatError(ValueError):
    """A format name or file suffix that is not in the table."""


@dataclass(frozen=True)
class FormatOption:
    """A format-specific export option (keyword of ``export``; ``--<name>`` on the command line)."""

    name: str
    default: Any
    choices: tuple[Any, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class ExportFormat:
    """One row of the table.

    ``exporter(wrapper, example_inputs, *, metadata, **options) -> bytes`` serialises the artifact in memory
    (metadata and content hash included; :func:`exporters.export` writes it atomically);
    ``loader(path, *, device, **runtime_options) -> Backend`` reads the file once, checks it (content hash;
    ``.pt2``: the safety gate) and loads those bytes, raising a one-line ``ArtifactError`` otherwise;
    ``read_metadata(path) -> ArtifactMetadata`` reads the metadata without deserialising the model.
    """

    name: str
    suffix: str
    suffixes: tuple[str, ...]
    description: str
    options: tuple[FormatOption, ...]
    exporter: Callable[..., None]
    loader: Callable[..., Backend]
    read_metadata: Callable[[Path], ArtifactMetadata]
    check_options: Callable[..., None] | None = None

    def option_defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``options`` (None means default); unknown names, bad choices or a
        combination the format refuses (ONNX: opset too low for the exporter) raise ``ValueError``."""
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"format {self.name!r} has no option(s) {unknown}; its options are "
                             f"{sorted(known) or 'none'}")
        resolved = self.option_defaults()
        resolved.update({k: v for k, v in options.items() if v is not None})
        for name, value in resolved.items():
            choices = known[name].choices
            if choices and value not in choices:
                raise ValueError(f"{self.name} option {name}={value!r}; choose from {', '.join(map(str, choices))}")
        if self.check_options is not None:
            self.check_options(**resolved)
        return resolved


FORMATS: dict[str, ExportFormat] = {
    "torchscript": ExportFormat(
        name="torchscript", suffix=".ts", suffixes=(".ts", ".pt"),
        description="torch.jit.script of the wrapper (deprecated upstream), loaded with torch.jit.load",
        options=(FormatOption("method", "script", torchscript.METHODS, "script the wrapper or trace it"),),
        exporter=torchscript.export_torchscript, loader=torchscript.load_torchscript,
        read_metadata=torchscript.read_torchscript_metadata,
    ),
    "onnx": ExportFormat(
        name="onnx", suffix=".onnx", suffixes=(".onnx",),
        description="ONNX (torch.export-based or TorchScript-based exporter), run with ONNX Runtime",
        options=(FormatOption("exporter", "dynamo", onnx_format.EXPORTERS, "dynamo (torch.export) or legacy"),
                 FormatOption("opset", onnx_format.DEFAULT_OPSET, (), "ONNX opset (dynamo >= 18, legacy >= 14)")),
        exporter=onnx_format.export_onnx, loader=onnx_format.load_onnx,
        read_metadata=onnx_format.read_onnx_metadata, check_options=onnx_format.check_exporter_options,
    ),
    "torch-export": ExportFormat(
        name="torch-export", suffix=".pt2", suffixes=(".pt2",),
        description="torch.export ExportedProgram (.pt2), checked for code, loaded with torch.export.load",
        options=(FormatOption("strict", False, (False, True), "torch.export strict mode"),),
        exporter=torch_export.export_program, loader=torch_export.load_program,
        read_metadata=torch_export.read_program_metadata,
    ),
    "openvino": ExportFormat(
        name="openvino", suffix=".xml", suffixes=(".xml",),
        description="OpenVINO IR (.xml + .bin beside it) converted from detrtool's ONNX, run with OpenVINO (CPU)",
        options=(FormatOption("weights", "fp32", openvino_format.WEIGHTS, "weights stored as fp32 or fp16"),),
        exporter=openvino_format.export_openvino, loader=openvino_format.load_openvino,
        read_metadata=openvino_format.read_openvino_metadata,
    ),
    "executorch": ExportFormat(
        name="executorch", suffix=".pte", suffixes=(".pte",),
        description="ExecuTorch program (torch.export, XNNPACK delegate), run with ExecuTorch's runtime (CPU; "
                    "the edge extra)",
        options=(), exporter=executorch_format.export_executorch, loader=executorch_format.load_executorch,
        read_metadata=executorch_format.read_executorch_metadata,
    ),
    "litert": ExportFormat(
        name="litert", suffix=".tflite", suffixes=(".tflite",),
        description="LiteRT (TFLite) flatbuffer converted with litert-torch, run with LiteRT's interpreter (CPU, "
                    "XNNPACK; the edge extra)",
        options=(), exporter=litert_format.export_litert, loader=litert_format.load_litert,
        read_metadata=litert_format.read_litert_metadata,
    ),
}


def format_names() -> tuple[str, ...]:
    return tuple(FORMATS)


def get_format(name: str) -> ExportFormat:
    """The table row for ``name``; :class:`UnknownFormatError` listing the known names otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownFormatError(f"unknown export format {name!r}; known formats: {', '.join(FORMATS)}") from None


def format_for_path(path: str | Path) -> ExportFormat:
    """The format a file's suffix implies (``.onnx``, ``.ts``/``.pt``, ``.pt2``)."""
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise UnknownFormatError(f"{path}: cannot tell the format from suffix {suffix or '(none)'!r} "
                             f"(known: {known}); name the format explicitly")


def read_metadata(path: str | Path, *, format: str | None = None) -> ArtifactMetadata:
    """Read the metadata back from an artifact of any format (the format from the suffix by default)."""
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: no such artifact file")
    fmt = get_format(format) if format else format_for_path(path)
    return fmt.read_metadata(path)
