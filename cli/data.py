"""``detrtool data``: make the synthetic shapes, convert VOC or YOLO to COCO JSON, check a dataset.

Every file written goes through ``detr_core.atomic.atomic_write``; a folder or file that cannot be written
(read-only, full disk) is one ``Error:`` line naming it, and leaves any previous file as it was.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli.options import RegularFile
from detr_core.data.shapes_render import SHAPE_CLASSES, ShapesParams


@click.group()
def data() -> None:
    """Datasets: generate the synthetic shapes, convert VOC or YOLO, check a dataset."""


@data.command()
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder (COCO layout).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--train-count", type=click.IntRange(min=0, max=1_000_000), default=4000, show_default=True)
@click.option("--val-count", type=click.IntRange(min=0, max=1_000_000), default=500, show_default=True)
@click.option("--image-size", type=click.IntRange(min=16, max=4096), default=128, show_default=True)
@click.option("--classes", default=",".join(SHAPE_CLASSES), show_default=True,
              help="Comma-separated shape classes (category ids 0..K-1 in this order).")
@click.option("--max-objects", type=click.IntRange(min=1, max=1000), default=5, show_default=True)
@click.option("--panoptic", is_flag=True,
              help="The panoptic variant: stuff backgrounds (ids after the shapes'), panoptic_{train,val}2017/ "
                   "PNGs + annotations/panoptic_*.json, and instances_*.json with masks (things).")
def shapes(out: str, seed: int, train_count: int, val_count: int, image_size: int, classes: str,
           max_objects: int, panoptic: bool) -> None:
    """Generate the synthetic-shapes dataset into OUT (train2017/, val2017/, annotations/)."""
    from detr_core.data.shapes import generate_shapes
    from detr_core.data.shapes_panoptic import MAX_OBJECTS, STUFF_CLASSES

    names = tuple(c.strip() for c in classes.split(",") if c.strip())
    try:
        params = ShapesParams(seed=seed, image_size=image_size, train_count=train_count, val_count=val_count,
                              classes=names, max_objects=max_objects)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if panoptic and max_objects > MAX_OBJECTS:
        raise click.BadParameter(f"{max_objects} is over {MAX_OBJECTS}, the most the panoptic segment ids allow",
                                 param_hint="'--max-objects'")
    try:
        root = generate_shapes(out, params, progress=sys.stderr.isatty(), panoptic=panoptic)
    except OSError as exc:
        raise click.ClickException(_write_error(exc, out)) from None
    stuff = (f"; stuff {', '.join(STUFF_CLASSES)}: ids {len(names)}..{len(names) + len(STUFF_CLASSES) - 1}"
             if panoptic else "")
    click.echo(f"wrote {train_count} train + {val_count} val images ({len(names)} classes, ids 0..{len(names) - 1}"
               f"{stuff}) to {root}")


@data.command()
@click.argument("voc_root", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="val", show_default=True, help="ImageSets/Main split (train, val, trainval, test).")
@click.option("--year", type=click.Choice(["2007", "2012"]), default="2007", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="COCO JSON to write.")
@click.option("--category-offset", type=click.Choice(["0", "1"]), default="0", show_default=True,
              help="0: category ids 0..19; 1: ids 1..20.")
@click.option("--remove-difficult", is_flag=True, help="Leave out objects flagged difficult.")
@click.option("--allow-outside-images", is_flag=True,
              help="Accept a <filename> leaving JPEGImages (absolute elsewhere, or '..' out of it; refused by default).")
def voc2coco(voc_root: str, split: str, year: str, out: str, category_offset: str, remove_difficult: bool,
             allow_outside_images: bool) -> None:
    """Convert a VOCdevkit split to COCO JSON (boxes: x = xmin - 1, w = xmax - xmin + 1).

    Boxes get the fix-ups `data check` warns about: zero-size or negative ones (xmin > xmax) are dropped,
    ones exceeding the image are clipped; each kind is one counted WARNING line and is recorded in the
    JSON's info.detrtool_fixups."""
    from detr_core.data.voc import voc_to_coco

    _check_not_an_input(out, voc_root)
    _convert(lambda: voc_to_coco(voc_root, split, out, year=year, category_id_offset=int(category_offset),
                                 remove_difficult=remove_difficult, allow_outside_images=allow_outside_images), out)


@data.command()
@click.argument("yolo_root", type=RegularFile(dir_okay=True))
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="COCO JSON to write.")
def yolo2coco(yolo_root: str, split: str, out: str) -> None:
    """Convert a YOLO split (YOLO_ROOT/data.yaml) to COCO JSON: category ids = class ids, boxes in pixels
    (x = (cx - w/2) * W ...), file_name relative to the split's images folder.

    Boxes get the fix-ups `data check` warns about (outside the image: clipped; zero-size: dropped), each
    kind one counted WARNING line, recorded in the JSON's info.detrtool_fixups; a malformed label line or
    a class outside data.yaml's names is one Error line naming the file and line."""
    from detr_core.data.yolo import yolo_to_coco

    _check_not_an_input(out, yolo_root)
    _convert(lambda: yolo_to_coco(yolo_root, split, out), out)


def _check_not_an_input(out: str, root: str) -> None:
    """A converter never writes over its dataset: ``--out`` may not be an existing file inside ``root`` other
    than a JSON one (``data.yaml``, a label, an image, an XML annotation)."""
    path = Path(out)
    if not path.is_file() or path.suffix.lower() == ".json":
        return
    if Path(root).resolve() in path.resolve().parents:
        raise click.BadParameter(f"{out} is a file of the dataset {root}: the COCO JSON would replace it (choose "
                                 "another name)", param_hint="'--out'")


def _convert(convert: Callable[[], dict[str, Any]], out: str) -> None:
    """Run a converter that writes ``out`` (COCO JSON); its refusals as one line; a summary line."""
    from detr_core.data.coco import DatasetError

    try:
        coco = convert()
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(_write_error(exc, out)) from None
    fixed = sum(coco["info"]["detrtool_fixups"].values())
    click.echo(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} boxes to {out}"
               + (f" ({fixed} box fix-up(s), see the warnings)" if fixed else ""))


def _write_error(exc: OSError, target: str) -> str:
    """``cannot write PATH: reason`` (the file the system named, else the command's output)."""
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"cannot write {exc.filename or target}: {reason}"


@data.command()
@click.argument("source", type=RegularFile(dir_okay=True))
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="Images folder (COCO JSON input).")
@click.option("--num-classes", type=click.IntRange(min=1, max=65536), help="Also check category ids < num_classes.")
@click.option("--year", type=click.Choice(["2007", "2012"]), default="2007", show_default=True,
              help="VOC year (VOCdevkit input).")
@click.option("--allow-outside-images", is_flag=True,
              help="A file_name leaving the images folder (absolute elsewhere, or '..') is a warning, not an error.")
@click.option("--panoptic", is_flag=True,
              help="COCO panoptic: SOURCE is a folder in the reference layout (DIR/annotations/panoptic_{split}2017"
                   ".json, DIR/panoptic_{split}2017/ PNGs, images in --images else DIR/{split}2017) or a panoptic "
                   "JSON with --images, its PNGs in the folder of its name (COCO's download: annotations/"
                   "panoptic_val2017/).")
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True,
              help="The split of a --panoptic folder.")
def check(source: str, images: str | None, num_classes: int | None, year: str, allow_outside_images: bool,
          panoptic: bool, split: str) -> None:
    """Check ANN.json --images DIR, a COCO panoptic folder (--panoptic), a VOC_ROOT or a YOLO folder (data.yaml);
    print the report; exit 1 when errors are found (the last line, 'Error: ...', counts them and repeats the
    first)."""
    from detr_core.data.check import check_coco, check_voc, check_yolo
    from detr_core.data.check_panoptic import check_coco_panoptic

    path = Path(source)
    progress = sys.stderr.isatty()
    if panoptic:
        ann, images_dir, png_dir = _panoptic_paths(path, images, split)
        report = check_coco_panoptic(ann, images_dir, png_dir, num_classes, progress=progress,
                                     allow_outside_images=allow_outside_images)
        source = str(ann)
    elif (path / "data.yaml").is_file() or path.suffix in (".yaml", ".yml"):
        report = check_yolo(path, progress=progress)
    elif path.is_dir():
        report = check_voc(path, year=year, progress=progress, allow_outside_images=allow_outside_images)
    else:
        if images is None:
            raise click.UsageError("checking a COCO JSON needs --images DIR")
        report = check_coco(path, images, num_classes, progress=progress, allow_outside_images=allow_outside_images)
    click.echo(report.format())
    if not report.ok:
        first = report.errors[0].removeprefix(f"{source}: ")
        raise click.ClickException(f"{source}: the check found {len(report.errors)} error(s) (first: {first})")


def _panoptic_paths(path: Path, images: str | None, split: str) -> tuple[Path, Path, Path]:
    """(panoptic JSON, images folder, PNG folder) of ``data check --panoptic``: a reference-layout folder
    (:func:`panoptic_split_paths`), or a JSON whose PNGs are in the folder of its name."""
    from detr_core.data.coco_panoptic import panoptic_split_paths

    if path.is_dir():
        images_dir, ann, png_dir = panoptic_split_paths(path, split)
        return ann, Path(images) if images else images_dir, png_dir
    if images is None:
        raise click.UsageError("checking a COCO panoptic JSON needs --images DIR (or give the dataset folder)")
    return path, Path(images), path.with_suffix("")
