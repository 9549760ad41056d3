"""``detrtool export``: a checkpoint to a TorchScript / ONNX / torch.export artifact, validated."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import click

from cli.options import RegularFile, parse_hw_option
from detr_core.errors import first_line

logger = logging.getLogger(__name__)

#: The format table's names (exporters.formats.format_names(), kept here so --help needs no exporter import;
#: tests/exporters/test_cli.py checks the two agree).
FORMAT_NAMES = ("torchscript", "onnx", "torch-export", "openvino", "executorch", "litert")



def _sha256(path: Path) -> str:
    """sha256 of a checkpoint file; of a Hugging Face folder, over its files' names and hashes."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        return hashlib.sha256("".join(f"{p.name}:{_sha256(p)}\n" for p in files).encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()



def _format_options(fmt: str, opset: int | None, exporter: str | None, method: str | None) -> dict[str, Any]:
    given = {"opset": opset, "exporter": exporter, "method": method}
    wrong = [f"--{k}" for k, v in given.items() if v is not None and not _applies(fmt, k)]
    if wrong:
        raise click.ClickException(f"{', '.join(wrong)} does not apply to --format {fmt}")
    return {k: v for k, v in given.items() if v is not None}


def _applies(fmt: str, option: str) -> bool:
    from exporters.formats import get_format

    return option in {o.name for o in get_format(fmt).options}


@click.command()
@click.option("--resume", "checkpoint", type=RegularFile(dir_okay=True, missing_ok=True), required=True,
              help="Checkpoint to export (detrtool, official DETR, or a Hugging Face DETR folder / .safetensors).")
@click.option("--format", "fmt", required=True, metavar="|".join(FORMAT_NAMES), help="Artifact format.")
@click.option("--input-size", default="800x1333", show_default=True, callback=parse_hw_option, metavar="HxW",
              help="Static canvas; images are resized to fit it and padded (mask is an input).")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=1, show_default=True,
              help="Static batch size.")
@click.option("--output", type=click.Path(dir_okay=False), help="Artifact path (default: CKPT_HxW.<suffix>).")
@click.option("--opset", type=click.IntRange(min=7, max=30), help="ONNX opset (default 18; dynamo needs >= 18).")
@click.option("--exporter", type=click.Choice(["dynamo", "legacy"]), help="ONNX exporter (default dynamo).")
@click.option("--method", type=click.Choice(["script", "trace"]), help="TorchScript: script (default) or trace.")
@click.option("--with-postprocess", is_flag=True, help="Embed post-processing: orig_sizes in; scores, labels, boxes out.")
@click.option("--no-validate", is_flag=True, help="Skip the comparison with eager after export.")
@click.option("--validate-images", type=click.Path(exists=True, file_okay=False),
              help="Folder of images for validation (default: the shapes val set).")
@click.option("--nheads", type=click.IntRange(min=1, max=1024),
              help="Attention heads (official checkpoints cannot carry it; assumed 8, with a warning).")
@click.option("--dilation", is_flag=True, help="Dilated last backbone stage (DC5 checkpoints).")
@click.option("--dynamic", is_flag=True,
              help="Symbolic batch, height and width (onnx, torch-export; torchscript --method script is "
                   "shape-agnostic anyway): --input-size and --batch-size are then only the traced example; "
                   "validated at batch 1 and 3 on two canvases.")
def export(checkpoint: str, fmt: str, input_size: tuple[int, int], batch_size: int, output: str | None,
           opset: int | None, exporter: str | None, method: str | None, with_postprocess: bool,
           no_validate: bool, validate_images: str | None, nheads: int | None, dilation: bool,
           dynamic: bool) -> None:
    """Export a checkpoint with a static (or, --dynamic, any) padded input and a live mask; validate it
    against eager.

    The artifact is written next to --output under a temporary name, validated there and only then renamed
    over --output: a failed export or validation, a full disk or Ctrl-C leaves a previous file untouched."""
    from exporters import export as export_model
    from exporters.export_api import check_dynamic
    from exporters.formats import UnknownFormatError, get_format

    try:
        fmt_row = get_format(fmt)
        options = _format_options(fmt, opset, exporter, method)
        resolved = fmt_row.resolve_options(options)
        if dynamic:
            check_dynamic(fmt, resolved, input_size=input_size, batch_size=batch_size)
    except (UnknownFormatError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    model = _load(Path(checkpoint), nheads=nheads, dilation=dilation)
    shape = "dynamic" if dynamic else f"{input_size[0]}x{input_size[1]}"
    path = Path(output) if output else Path(f"{Path(checkpoint).stem}_{shape}{fmt_row.suffix}")
    extra = {"checkpoint": Path(checkpoint).name, "checkpoint_sha256": _sha256(Path(checkpoint))}
    result = _run_export(export_model, model, fmt, path, input_size=input_size, batch_size=batch_size,
                         with_postprocess=with_postprocess, validate=not no_validate,
                         validate_images=validate_images, extra_metadata=extra, dynamic=dynamic, **options)
    from exporters.artifact_file import artifact_files

    size_mb = sum(f.stat().st_size for f in artifact_files(result.path)) / 1e6
    meta = result.metadata
    canvas = f"{input_size[0]}x{input_size[1]}"
    shapes = (f"dynamic batch/height/width, example {canvas} batch {meta.batch_size}" if dynamic else
              f"canvas {canvas}, batch {batch_size}")
    click.echo(f"wrote {result.path} ({fmt}, {size_mb:.1f} MB, {shapes}) in {result.export_seconds:.1f} s")
    if result.validation is not None:
        click.echo(result.validation.table())
        iou = result.validation.min_mask_iou
        masks = "" if iou is None else f", min mask IoU {iou:.4f} (confident queries)"
        click.echo(f"validation ok: max |Δ| {result.validation.max_abs_diff:.2e} vs eager{masks}")


def _load(path: Path, *, nheads: int | None, dilation: bool):
    from detr_core.checkpoint import CheckpointError, load_checkpoint

    overrides: dict[str, Any] = {"nheads": nheads} if nheads else {}
    if dilation:
        overrides["dilation"] = True
    try:
        return load_checkpoint(path, **overrides)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None


def _run_export(export_model, model, fmt: str, path: Path, **kwargs: Any):
    from exporters.validate import ValidationError

    try:
        return export_model(model, fmt, path, **kwargs)
    except ValidationError as exc:
        click.echo(exc.report.table(), err=True)
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        logger.debug("export failed", exc_info=True)
        raise click.ClickException(f"{path}: export to {fmt} not written ({exc.strerror or first_line(exc)}); "
                                   "any previous file is untouched") from None
    except (ValueError, RuntimeError) as exc:
        logger.debug("export failed", exc_info=True)
        raise click.ClickException(f"export to {fmt} failed: {first_line(exc)}") from None
