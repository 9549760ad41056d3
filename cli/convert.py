"""``detrtool convert``: any checkpoint ``load_checkpoint`` reads -> a Hugging Face folder, an official
file or weights-only safetensors. Tensors are copied bit for bit; every file is written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.options import RegularFile
from detr_core.atomic import file_identity

TARGETS = ("hf", "official", "safetensors")


def check_output(output: Path, target: str) -> None:
    """A :class:`click.BadParameter` when ``output`` already exists as the other kind (a file for a folder
    target, a folder for a file target), or cannot be a safetensors output; checked before any work."""
    from detr_core.hf import check_safetensors_target

    if target == "hf" and output.exists() and not output.is_dir():
        raise click.BadParameter(f"{output} exists and is not a folder (--to hf writes a model folder)",
                                 param_hint="--output")
    if target != "hf" and output.is_dir():
        raise click.BadParameter(f"{output} is a folder (--to {target} writes one file)", param_hint="--output")
    if target == "safetensors":
        try:
            check_safetensors_target(output)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--output") from None


def check_not_an_input(source: Path, output: Path, target: str) -> None:
    """``convert`` never writes over what it reads: no file it will write (``--to hf``: ``config.json`` and
    ``model.safetensors`` in the folder) may be the source, a file of a source folder, or the ``config.json`` a
    ``.safetensors`` source was read with."""
    planned = [output / "config.json", output / "model.safetensors"] if target == "hf" else [output]
    read = [source, *(source.iterdir() if source.is_dir() else [])]
    if source.suffix == ".safetensors":
        read.append(source.parent / "config.json")
    inputs = {key for key in map(file_identity, read) if key is not None}
    for path in planned:
        if file_identity(path) in inputs:
            raise click.BadParameter(f"{path} is read from SOURCE {source}: convert does not write over its "
                                     "input (choose another --output)", param_hint="--output")


def _overrides(nheads: int | None, dilation: bool | None) -> dict[str, Any]:
    values = {"nheads": nheads, "dilation": dilation}
    return {k: v for k, v in values.items() if v is not None}


def write_target(model: Any, target: str, output: Path, hf_backbone: str) -> str:
    """Write ``model`` (a loaded DETR with its ``config``) as ``target``; returns what was written."""
    from detr_core import hf

    state, config = model.state_dict(), model.config
    if target == "hf":
        hf.write_hf_folder(output, state, config, backbone_kind=hf_backbone)
        return f"{output}/ (config.json + model.safetensors, {hf_backbone} backbone)"
    if target == "safetensors":
        hf.write_safetensors(output, state, config)
        return f"{output} (its detrtool config embedded in the file's metadata)"
    hf.write_official(output, state)
    return (f"{output} (official layout; it cannot carry nheads={config.nheads}"
            f"{', dilation' if config.dilation else ''} or class names: pass --nheads when loading it)")


@click.command("convert")
@click.argument("source", type=RegularFile(dir_okay=True, path_type=Path))
@click.option("--to", "target", type=click.Choice(TARGETS), required=True,
              help="hf: a DetrForObjectDetection folder (DetrForSegmentation for a panoptic model); official: "
                   "{'model': state_dict} (facebookresearch/detr); safetensors: weights-only .safetensors carrying its "
                   "detrtool config in its metadata (no config.json: one beside it belongs to another model).")
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Folder (hf) or file to write.")
@click.option("--hf-backbone", type=click.Choice(["timm", "transformers"]),
              help="--to hf: timm's ResNet (as the Hub's facebook/detr-*) or transformers' ResNetBackbone. "
                   "Default: the source's, else timm.")
@click.option("--nheads", type=click.IntRange(min=1, max=1024), help="Official sources cannot carry it (default 8).")
@click.option("--dilation/--no-dilation", default=None, help="Official DC5 sources: --dilation.")
def convert(source: Path, target: str, output: Path, hf_backbone: str | None, nheads: int | None,
            dilation: bool | None) -> None:
    """Convert SOURCE (a detrtool or official checkpoint, a Hugging Face DETR folder or a .safetensors) to
    another layout. Round trips are exact: the tensors written are the source's, bit for bit. A panoptic
    source keeps its mask head in every layout (--to hf: a DetrForSegmentation folder)."""
    from detr_core.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint

    check_output(output, target)
    check_not_an_input(source, output, target)
    overrides = _overrides(nheads, dilation)
    try:
        ckpt = read_checkpoint(source)
        model = model_from_checkpoint(ckpt, source, **overrides)
        hf_backbone = hf_backbone or ckpt.get("hf_backbone", "timm")
    except (CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        written = write_target(model, target, output, hf_backbone or "timm")
    except (CheckpointError, ValueError) as exc:
        raise click.ClickException(f"{source}: cannot convert --to {target}: {exc}") from None
    click.echo(f"wrote {written}")
