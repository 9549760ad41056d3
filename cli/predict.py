"""``detrtool predict``: detections on images from a checkpoint or an exported artifact, drawn as PNGs
(with instance masks and, asked for, panoptic maps for a segmentation model)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.options import FiniteFloatRange, RegularFile, panoptic_threshold_option, parse_hw_option
from cli.outputs import writable_dir
from detr_core.atomic import WriteRefused, atomic_write, file_identity, make_folder, refuse_link
from exporters.formats import PREDICT_FORMATS

if TYPE_CHECKING:  # the heavy modules load when the command runs, not for --help or a refused option
    from exporters.image_inputs import Failure
    from exporters.predict.model import PredictModel
    from exporters.predict.results import OutputNames
    from exporters.predict.run import ImageDetections

logger = logging.getLogger(__name__)


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(), metavar="IMAGES_OR_DIRS...")
@click.option("--resume", "checkpoint", type=RegularFile(dir_okay=True),
              help="A checkpoint (detrtool, official, or a Hugging Face DETR folder / .safetensors).")
@click.option("--model", "artifact", type=RegularFile(), help="An exported artifact (.onnx, .ts, .pt2, OpenVINO .xml, ExecuTorch .pte, LiteRT .tflite).")
@click.option("--format", "fmt", type=click.Choice(PREDICT_FORMATS), default=None,
              help="Runtime. With --resume: eager (default) or export to this format first and run that. "
                   "With --model: read from the file suffix unless given.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threshold", type=FiniteFloatRange(0, 1), default=0.7, show_default=True, help="Minimum score.")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=1, show_default=True)
@click.option("--output-dir", type=click.Path(file_okay=False), default="predictions", show_default=True)
@click.option("--save-json", is_flag=True, help="Also write OUTPUT_DIR/detections.json (COCO results format).")
@click.option("--show-attention", is_flag=True,
              help="Also write NAME_attention.png: the decoder's last cross-attention of the top detections.")
@click.option("--input-size", callback=parse_hw_option, metavar="HxW",
              help="With --resume: a static canvas, e.g. 800x1333 (default: eager pads to the batch's largest "
                   "image; an export on the fly uses the checkpoint's eval size x max size).")
@click.option("--nheads", type=click.IntRange(min=1, max=1024), default=None,
              help="With an official --resume checkpoint: attention heads (a checkpoint cannot carry it).")
@click.option("--class-map", metavar="coco-voc|FILE.json",
              help="Label detections with the dataset's categories (model classes outside the map are dropped); "
                   "a model without class names is taken as COCO's 91.")
@click.option("--mask-threshold", type=FiniteFloatRange(0, 1), default=0.5, show_default=True,
              help="Segmentation models: the mask probability a pixel needs to belong to a detection's mask.")
@click.option("--panoptic", is_flag=True,
              help="Segmentation models: also write panoptic/NAME.png (COCO panoptic ids), NAME_panoptic.png "
                   "(the map in colour, with a legend) and panoptic.json (COCO panoptic predictions).")
@panoptic_threshold_option
def predict(inputs: tuple[str, ...], checkpoint: str | None, artifact: str | None, fmt: str | None, device: str,
            threshold: float, batch_size: int, output_dir: str, save_json: bool, show_attention: bool,
            input_size: tuple[int, int] | None, nheads: int | None, class_map: str | None = None,
            mask_threshold: float = 0.5, panoptic: bool = False, panoptic_threshold: float = 0.85) -> None:
    """Detect objects in IMAGES_OR_DIRS and write one PNG per image (boxes, class names, scores; a
    segmentation model's masks in colour under them).

    Folders are listed for image files; any mode (grayscale, RGBA, palette, 16-bit) is converted to RGB and
    EXIF orientation applied. Unreadable files are listed at the end and make the exit status 1.
    """
    from tqdm import tqdm

    from detr_core.data.yolo import yolo_inputs
    from detr_core.evaluation.class_mapped import names_by_id
    from exporters.image_inputs import Failure, collect_image_paths
    from exporters.predict.panoptic import PanopticWriter
    from exporters.predict.results import OutputNames, coco_results, image_ids, summary_line
    from exporters.predict.run import Predictor

    if panoptic and class_map is not None:
        raise click.UsageError("--panoptic writes the model's own classes: it cannot be combined with --class-map")
    sources = yolo_inputs(inputs)
    paths, failures = collect_image_paths(sources)
    names = OutputNames(Path(output_dir), paths, derived=(["_attention"] if show_attention else [])
                        + (["_panoptic"] if panoptic else []), folders=["panoptic"] if panoptic else [])
    _check_inputs_kept(Path(output_dir), sources, paths, names)
    writable_dir(output_dir)
    _check_targets(Path(output_dir), names, panoptic=panoptic, save_json=save_json)
    model = _open_model(checkpoint, artifact, fmt, device, input_size, nheads, show_attention, batch_size)
    _check_panoptic(panoptic, model)
    if not model.class_names:
        click.echo("predict: the model carries no class names; labels are class ids")
    mapping = _class_map(class_map, model)
    if model.spec.batch is not None and model.spec.batch != batch_size:
        click.echo(f"predict: the artifact's batch size is {model.spec.batch}; --batch-size {batch_size} ignored")
        batch_size = model.spec.batch
    predictor = Predictor(model.runtime, model.spec, threshold=threshold, batch_size=batch_size,
                          attention_runtime=model.attention, class_names=model.class_names,
                          mask_threshold=mask_threshold, panoptic_threshold=panoptic_threshold if panoptic else None,
                          is_thing=model.is_thing)
    click.echo(f"predict: {len(paths)} image(s) with {model.description}, threshold {threshold}"
               + (f", masks > {mask_threshold}" if model.masks else ""))
    writer = PanopticWriter(names.root, class_names=model.class_names, is_thing=model.is_thing) if panoptic else None
    found: list[ImageDetections] = []
    class_names, unmapped = (model.class_names if mapping is None else names_by_id(mapping)), 0
    progress = tqdm(predictor.predict(paths), total=len(paths), unit="img", disable=len(paths) < 10, leave=False)
    for item in progress:
        if isinstance(item, Failure):
            failures.append(item)
            continue
        if mapping is not None:
            item, dropped = _remap(item, mapping)
            unmapped += dropped
        found.append(item)
        png = _write_pictures(item, names, class_names)
        if writer is not None and item.panoptic is not None:
            writer.add(item.image.pixels, item.panoptic, png)
        tqdm.write(summary_line(item, class_names, png))  # stays above the progress bar
    if mapping is not None:
        click.echo(f"class map {mapping.name}: {unmapped} detection(s) of model classes outside the map dropped")
    if writer is not None and found:
        click.echo(f"wrote {writer.finish(image_ids(found))} and {len(found)} panoptic PNG(s) "
                   f"(threshold {panoptic_threshold})")
    if save_json:
        make_folder(names.root)
        json_path = names.root / "detections.json"
        atomic_write(json_path, lambda f: json.dump(coco_results(found), f), binary=False)
        click.echo(f"wrote {json_path} ({sum(len(f) for f in found)} detections)")
    _report_failures(failures)


def _check_targets(root: Path, names: OutputNames, *, panoptic: bool, save_json: bool) -> None:
    """Before any work: every output name is free for predict to write (``panoptic/`` a folder or absent, the
    JSON files no folders, no symbolic link at any planned file), so a blocked one fails here, not after the
    pictures were written."""
    folders = [root / "panoptic"] if panoptic else []
    files = ([root / "panoptic.json"] if panoptic else []) + ([root / "detections.json"] if save_json else [])
    for path in [*folders, *files, *names.files()]:
        try:
            refuse_link(path)
        except WriteRefused as exc:
            raise click.ClickException(f"--output-dir {root}: {exc}") from None
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise click.ClickException(f"--output-dir {root}: {folder} exists and is not a folder (the panoptic "
                                       "PNGs go there)")
    for file in files:
        if file.is_dir():
            raise click.ClickException(f"--output-dir {root}: {file} is a folder (predict writes a file there)")


def _check_inputs_kept(root: Path, sources: list[str], paths: list[Path], names: OutputNames) -> None:
    """predict never writes over its inputs: ``--output-dir`` may not be an input folder, and no planned
    output may be an input file (the same path, a link to it, or a hard link)."""
    for source in sources:
        if Path(source).is_dir() and _same(Path(source), root):
            raise click.ClickException(f"--output-dir {root} is the input folder {source}: predict would write its "
                                       "pictures among the images it reads; choose another --output-dir")
    inputs = {file_identity(p) for p in paths} - {None}
    for planned in names.files():
        if file_identity(planned) in inputs:
            raise click.ClickException(f"--output-dir {root}: {planned} is one of the input images; predict does "
                                       "not write over an input (choose another --output-dir)")


def _same(a: Path, b: Path) -> bool:
    return file_identity(a) is not None and file_identity(a) == file_identity(b)


def _check_panoptic(panoptic: bool, model: PredictModel) -> None:
    """``--panoptic`` needs a segmentation model (a detector has no masks)."""
    if panoptic and not model.masks:
        raise click.ClickException(f"--panoptic: {model.description} is a detector without masks; "
                                   "give a segmentation model (trained with --masks, or a panoptic checkpoint)")
    if panoptic and getattr(getattr(model.runtime, "metadata", None), "with_postprocess", False):
        raise click.ClickException(f"--panoptic: {model.description} was exported --with-postprocess (no class "
                                   "logits); export it without post-processing")


def _remap(item: ImageDetections, mapping) -> tuple[ImageDetections, int]:
    """:func:`remap_found`, the masks of the detections kept carried along."""
    from detr_core.evaluation.class_mapped import remap_found

    new, dropped = remap_found(item, mapping)
    if item.masks is not None:
        row = {int(q): i for i, q in enumerate(item.queries.tolist())}
        new.masks = item.masks[[row[int(q)] for q in new.queries.tolist()]]
    return new, dropped


def _class_map(spec: str | None, model: PredictModel):
    """``--class-map`` resolved against the model's names (none: COCO's 91); None without one."""
    from detr_core.data.class_map import load_class_map

    if spec is None:
        return None
    names = tuple(model.class_names)
    try:
        return load_class_map(spec, model_names=names, num_model_classes=len(names) or 91, data_names=None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _open_model(checkpoint, artifact, fmt, device, input_size, nheads, show_attention, batch_size) -> PredictModel:
    import torch

    from exporters.predict.model import open_artifact, open_checkpoint

    if (checkpoint is None) == (artifact is None):
        raise click.UsageError("give exactly one of --resume CKPT or --model ARTIFACT")
    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: CUDA is not available here (use --device cpu)")
    try:
        if checkpoint is not None:
            return open_checkpoint(checkpoint, fmt=fmt or "eager", device=device, input_size=input_size,
                                   nheads=nheads, attention=show_attention, batch_size=batch_size)
        if input_size is not None or nheads is not None:
            raise click.UsageError("--input-size and --nheads apply to --resume; an artifact carries its own")
        if show_attention:
            raise click.UsageError("--show-attention needs the PyTorch model: use --resume CKPT "
                                   "(with --format to take the detections from an exported runtime)")
        return open_artifact(artifact, fmt=fmt, device=device)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _write_pictures(item: ImageDetections, names: OutputNames, class_names: tuple[str, ...]) -> Path:
    from exporters.predict.drawing import draw_detections, save_attention_grid, save_png

    png = names.picture(item.image.path)
    save_png(draw_detections(item.image.pixels, item.boxes, item.labels, item.scores, class_names, item.masks), png)
    if item.attention is not None and len(item):
        k = item.attention.shape[0]
        save_attention_grid(item.image.pixels, item.attention, item.boxes[:k], item.labels[:k], item.scores[:k],
                            png.with_name(png.stem + "_attention.png"), class_names)
    return png


def _report_failures(failures: list[Failure]) -> None:
    if not failures:
        return
    click.echo(f"{len(failures)} input(s) skipped:", err=True)
    for failure in failures:
        click.echo(f"  {failure.path}: {failure.reason}", err=True)
    first = failures[0]
    raise click.ClickException(f"{len(failures)} input(s) skipped (listed above; first: {first.path}: {first.reason})")
