"""The format table: every export format detrtool writes, how it is written and how it is loaded.

Used by :func:`exporters.export`, :func:`exporters.runtime.load_runtime`, ``detrtool bench`` and
``detrtool predict``. Each :class:`ExportFormat` names its file suffix, its format-specific options
(with defaults and choices), the function that writes it, the loader that gives a backend, and the
metadata reader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters.format_options import ONNX_DEFAULT_OPSET, ONNX_EXPORTERS, OPENVINO_WEIGHTS, TORCHSCRIPT_METHODS

if TYPE_CHECKING:
    from exporters.backend import Backend
    from exporters.metadata import ArtifactMetadata


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """``exporters.<module>.<name>``, imported on the first call: the table itself costs no torch import, so
    the CLI can list formats and refuse a bad option at once."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"exporters.{module}"), name)(*args, **kwargs)

    call.__name__, call.__qualname__ = name, f"{module}.{name}"
    return call


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
        options=(FormatOption("method", "script", TORCHSCRIPT_METHODS, "script the wrapper or trace it"),),
        exporter=_lazy("torchscript", "export_torchscript"), loader=_lazy("torchscript", "load_torchscript"),
        read_metadata=_lazy("torchscript", "read_torchscript_metadata"),
    ),
    "onnx": ExportFormat(
        name="onnx", suffix=".onnx", suffixes=(".onnx",),
        description="ONNX (torch.export-based or TorchScript-based exporter), run with ONNX Runtime",
        options=(FormatOption("exporter", "dynamo", ONNX_EXPORTERS, "dynamo (torch.export) or legacy"),
                 FormatOption("opset", ONNX_DEFAULT_OPSET, (), "ONNX opset (dynamo >= 18, legacy >= 14)")),
        exporter=_lazy("onnx", "export_onnx"), loader=_lazy("onnx", "load_onnx"),
        read_metadata=_lazy("onnx", "read_onnx_metadata"), check_options=_lazy("onnx", "check_exporter_options"),
    ),
    "torch-export": ExportFormat(
        name="torch-export", suffix=".pt2", suffixes=(".pt2",),
        description="torch.export ExportedProgram (.pt2), checked for code, loaded with torch.export.load",
        options=(FormatOption("strict", False, (False, True), "torch.export strict mode"),),
        exporter=_lazy("torch_export", "export_program"), loader=_lazy("torch_export", "load_program"),
        read_metadata=_lazy("torch_export", "read_program_metadata"),
    ),
    "openvino": ExportFormat(
        name="openvino", suffix=".xml", suffixes=(".xml",),
        description="OpenVINO IR (.xml + .bin beside it) converted from detrtool's ONNX, run with OpenVINO (CPU)",
        options=(FormatOption("weights", "fp32", OPENVINO_WEIGHTS, "weights stored as fp32 or fp16"),),
        exporter=_lazy("openvino", "export_openvino"), loader=_lazy("openvino", "load_openvino"),
        read_metadata=_lazy("openvino", "read_openvino_metadata"),
    ),
    "executorch": ExportFormat(
        name="executorch", suffix=".pte", suffixes=(".pte",),
        description="ExecuTorch program (torch.export, XNNPACK delegate), run with ExecuTorch's runtime (CPU; "
                    "the edge extra)",
        options=(), exporter=_lazy("executorch", "export_executorch"), loader=_lazy("executorch", "load_executorch"),
        read_metadata=_lazy("executorch", "read_executorch_metadata"),
    ),
    "litert": ExportFormat(
        name="litert", suffix=".tflite", suffixes=(".tflite",),
        description="LiteRT (TFLite) flatbuffer converted with litert-torch, run with LiteRT's interpreter (CPU, "
                    "XNNPACK; the edge extra)",
        options=(), exporter=_lazy("litert", "export_litert"), loader=_lazy("litert", "load_litert"),
        read_metadata=_lazy("litert", "read_litert_metadata"),
    ),
}


#: What ``predict --format`` runs: the model itself (eager) or any row of the table.
PREDICT_FORMATS: tuple[str, ...] = ("eager", *FORMATS)


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
    from exporters.metadata import MetadataError

    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: no such artifact file")
    fmt = get_format(format) if format else format_for_path(path)
    return fmt.read_metadata(path)
