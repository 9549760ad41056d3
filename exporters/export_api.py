"""``export(model, format, path, ...)``: wrap, write through the format table, validate against eager."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from detr_core.atomic import atomic_output, make_folder, refuse_link
from exporters.artifact_file import artifact_files, companion_files
from exporters.formats import get_format
from exporters.metadata import DYNAMIC_LIMITS, ArtifactMetadata, build_metadata
from exporters.validation_inputs import example_inputs
from exporters.wrapper import has_masks, io_names, wrap

logger = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (800, 1333)
#: Formats that can be exported with symbolic batch/height/width (TorchScript: ``method="script"`` only).
DYNAMIC_FORMATS: tuple[str, ...] = ("onnx", "torch-export", "torchscript")


@dataclass
class ExportResult:
    """The artifact written, its metadata, the validation report (None when skipped), seconds taken."""

    path: Path
    format: str
    metadata: ArtifactMetadata
    validation: Any | None
    export_seconds: float


def output_path(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    """``path`` itself when its suffix fits the format; ``ValueError`` naming the right suffixes otherwise."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{path}: the file name must end with {' or '.join(suffixes)} for this format")
    make_folder(path.parent)
    for file in artifact_files(path):
        refuse_link(file)  # the artifact and its companions: checked before the export's minutes of work
    return path


def export(model: nn.Module, format: str, path: str | Path, *, input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
           batch_size: int = 1, with_postprocess: bool = False, size: int | None = None,
           max_size: int | None = None, validate: bool = True, validate_images: str | Path | None = None,
           validate_threshold: float = 0.5, tolerance: float = 1e-4, extra_metadata: dict | None = None,
           dynamic: bool = False, **format_options: Any) -> ExportResult:
    """Export ``model`` (a ``DETR``; put in eval mode) to ``path`` with a static ``batch_size`` x canvas
    ``input_size`` (H, W) and a live mask; validate against eager unless ``validate=False``.

    ``dynamic``: batch, height and width symbolic (ONNX, torch.export; TorchScript ``script`` is
    shape-agnostic anyway, ``trace`` is refused); ``batch_size`` x ``input_size`` is then only the example
    traced (recorded), and validation runs at batch 1 and 3 on that canvas and one of another aspect.

    ``size``/``max_size``: the resize rule recorded for runtimes (default: the canvas's shorter and
    longer side). ``format_options``: the format's options (see ``exporters.formats``), e.g.
    ``exporter="legacy", opset=17`` for ONNX or ``method="trace"`` for TorchScript.
    The artifact is written to a temp file next to ``path``, validated there and only then renamed over
    ``path``: a failed export, a failed validation (``exporters.validate.ValidationError``), a full disk
    (``OSError``) or Ctrl-C leaves any previous file at ``path`` byte-identical and no temp file behind.
    """
    fmt = get_format(format)
    options = fmt.resolve_options(format_options)
    path = output_path(path, fmt.suffixes)
    input_size = (int(input_size[0]), int(input_size[1]))
    if dynamic:
        check_dynamic(fmt.name, options, input_size=input_size, batch_size=batch_size)
        batch_size = max(2, batch_size)  # torch.export specialises a dimension whose example is 1
    inputs_names, output_names = io_names(with_postprocess=with_postprocess, masks=has_masks(model))
    metadata = build_metadata(
        model, format=fmt.name, input_size=input_size, batch_size=batch_size,
        size=size or min(input_size), max_size=max_size or max(input_size), with_postprocess=with_postprocess,
        input_names=inputs_names, output_names=output_names, format_options=options, extra=extra_metadata,
        dynamic=dynamic)
    wrapper = wrap(model, with_postprocess=with_postprocess)
    device = next(model.parameters()).device
    examples = example_inputs(batch_size=batch_size, input_size=input_size,
                              with_postprocess=with_postprocess, device=device)
    start = time.perf_counter()
    data = fmt.exporter(wrapper, examples, metadata=metadata, **options)
    seconds = time.perf_counter() - start
    report = None
    with atomic_output(path, suffix=path.suffix) as tmp, companion_files(tmp, path, data) as main:
        write_new_file(tmp, main, final=path)
        metadata = fmt.read_metadata(tmp)
        if validate:
            report = _validate(model, tmp, path, images=validate_images, threshold=validate_threshold,
                               tolerance=tolerance, device=str(device))
    logger.info("exported %s to %s in %.1f s", fmt.name, path, seconds)
    return ExportResult(path=path, format=fmt.name, metadata=metadata, validation=report, export_seconds=seconds)


def check_dynamic(fmt: str, options: dict[str, Any], *, input_size: tuple[int, int], batch_size: int) -> None:
    """``ValueError`` for a dynamic export that cannot be: a traced TorchScript (the trace bakes the example's
    shapes into the graph) or an example outside the symbolic ranges."""
    if fmt not in DYNAMIC_FORMATS:
        raise ValueError(f"--dynamic applies to {', '.join(DYNAMIC_FORMATS)}, not to {fmt}")
    if fmt == "torchscript" and options.get("method") == "trace":
        raise ValueError("--dynamic does not apply to a traced TorchScript (the trace fixes the example's "
                         "shapes); use --method script, which takes any shape")
    for name, value in (("batch", batch_size), ("height", input_size[0]), ("width", input_size[1])):
        low, high = DYNAMIC_LIMITS[name]
        if not low <= value <= high:
            raise ValueError(f"--dynamic: the example {name} {value} is outside the symbolic range {low}..{high}")


def write_new_file(tmp: Path, data: bytes, *, final: Path) -> None:
    """``data`` into the fresh temp file ``tmp``; an ``OSError`` (disk full, read-only folder) names ``final``."""
    try:
        tmp.write_bytes(data)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from None


def _validate(model: nn.Module, tmp: Path, path: Path, **kwargs: Any):
    """Validate the temp file; a failure names ``path`` (left untouched) instead of the temp file."""
    from exporters.validate import ValidationError, validate_artifact

    try:
        return validate_artifact(model, tmp, raise_on_failure=True, **kwargs)
    except ValidationError as exc:
        exc.report.path = path
        raise ValidationError(exc.report, note="not written, any previous file is untouched") from None
