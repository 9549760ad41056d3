"""Reusable click options. ``dataset_options`` names the data of train/eval/bench/predict commands."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

import click

from detr_core.data.naming import DatasetSource
from detr_core.data.sizes import parse_hw
from detr_core.input_files import NOT_REGULAR

#: The keyword arguments ``dataset_options`` adds (all but ``pad_to`` are ``DatasetSource`` fields).
DATASET_OPTION_NAMES: tuple[str, ...] = DatasetSource.field_names() + ("pad_to",)


def parse_hw_option(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """click callback for every ``HxW`` option (``--pad-to``, ``--input-size``): ``(H, W)`` or None."""
    if not value:
        return None
    try:
        return parse_hw(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange that also refuses nan and inf (which compare False against any bound, so a plain
    FloatRange lets them through). Every float option of every command uses it (tests/cli/test_main.py)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return number


def file_kind_problem(path: str | os.PathLike[str], *, dir_okay: bool = False) -> str | None:
    """Why ``path`` (which exists) cannot be read as an input file: ``not a regular file`` for a fifo, a
    device (a symlink to /dev/zero) or a socket, ``is a folder`` for a folder unless ``dir_okay``; None
    when it is a regular file (symlinks followed) or an accepted folder."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        return None if dir_okay else "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return NOT_REGULAR
    return None


class RegularFile(click.Path):
    """``click.Path(exists=True)`` for an input file: a fifo, a device (e.g. a symlink to /dev/zero) or a
    socket is refused as ``not a regular file`` before anything opens it (reading one would block or never
    end); ``dir_okay`` lets a folder through (a Hugging Face model folder as --resume); ``missing_ok`` leaves a
    missing path to the command (which names it in its own words)."""

    def __init__(self, *, dir_okay: bool = False, missing_ok: bool = False, **kwargs: Any) -> None:
        super().__init__(exists=not missing_ok, dir_okay=dir_okay, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        if not os.path.exists(converted):  # missing_ok: the command names a missing file itself
            return converted
        problem = file_kind_problem(converted, dir_okay=self.dir_okay)
        if problem:
            self.fail(f"{click.format_filename(value)!r}: {problem}.", param, ctx)
        return converted


_DIR = click.Path(exists=True, file_okay=False)
_ANN = RegularFile()


def dataset_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--coco-path --train-images --train-ann --val-images --val-ann --voc-root --voc-year
    --remove-difficult --yolo-root --class-map --allow-outside-images --pad-to``; ``pad_to`` arrives parsed as
    ``(H, W)`` or None."""
    options = [
        click.option("--coco-path", type=_DIR, help="COCO layout: DIR/{train,val}2017 + DIR/annotations/."),
        click.option("--coco-panoptic-path", type=_DIR,
                     help="COCO panoptic (segmentation models): DIR/annotations/panoptic_{train,val}2017.json + "
                          "DIR/panoptic_{train,val}2017/ PNGs; images from --coco-path (else DIR)."),
        click.option("--train-images", type=_DIR, help="Training images folder (overrides --coco-path)."),
        click.option("--train-ann", type=_ANN, help="Training COCO annotation JSON."),
        click.option("--val-images", type=_DIR, help="Validation images folder (overrides --coco-path)."),
        click.option("--val-ann", type=_ANN, help="Validation COCO annotation JSON."),
        click.option("--voc-root", type=_DIR, help="A VOCdevkit (or VOC2007/VOC2012) folder."),
        click.option("--voc-year", type=click.Choice(["2007", "2012"]), default="2007", show_default=True),
        click.option("--remove-difficult", is_flag=True, help="VOC: drop objects flagged difficult."),
        click.option("--yolo-root", type=RegularFile(dir_okay=True), help="A YOLO dataset: DIR/data.yaml (names, train, val) + labels/*.txt."),
        click.option("--class-map", metavar="coco-voc|FILE.json",
                     help="Model class -> dataset category: the built-in coco-voc (a COCO checkpoint on VOC) or a "
                          "JSON object {model id or name: dataset id or name}; unmapped predictions are not scored."),
        click.option("--allow-outside-images", is_flag=True,
                     help="Read images whose file_name leaves the images folder (an absolute path elsewhere, "
                          "or '..' out of it); refused by default."),
        click.option("--pad-to", callback=parse_hw_option, metavar="HxW",
                     help="Pad every batch to this fixed canvas, e.g. 800x1333 (default: batch maximum)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def dataset_source_from_options(options: Mapping[str, Any]) -> DatasetSource:
    """The :class:`DatasetSource` named by ``dataset_options`` kwargs (other keys are ignored).

    No dataset option given → the synthetic shapes default. A ``--coco-path`` that is a VOC folder is read
    as ``--voc-root`` (:func:`detr_core.data.sources.recognise_voc`, logged).
    """
    values = {k: options[k] for k in DatasetSource.field_names() if k in options and options[k] is not None}
    for key in ("voc_year",):
        values[key] = str(values.get(key, "2007"))
    for flag in ("remove_difficult", "allow_outside_images"):
        values[flag] = bool(values.get(flag, False))
    from detr_core.data.sources import recognise_voc

    return recognise_voc(DatasetSource(**values))


def pop_dataset_options(kwargs: dict[str, Any]) -> tuple[DatasetSource, tuple[int, int] | None]:
    """Remove the ``dataset_options`` keys from ``kwargs``; return ``(DatasetSource, pad_to)``."""
    picked = {k: kwargs.pop(k) for k in DATASET_OPTION_NAMES if k in kwargs}
    return dataset_source_from_options(picked), picked.get("pad_to")


# ------------------------------------------------------------------------ the reference's spellings
#: facebookresearch/detr ``main.py`` options a command may have no use for: name -> takes a value. A
#: command ignores the ones it does not define (one line says so) instead of refusing the reference's
#: command line.
REFERENCE_OPTIONS: dict[str, bool] = {
    "--lr": True, "--lr_backbone": True, "--batch_size": True, "--weight_decay": True, "--epochs": True,
    "--lr_drop": True, "--clip_max_norm": True, "--frozen_weights": True, "--backbone": True, "--dilation": False,
    "--position_embedding": True, "--enc_layers": True, "--dec_layers": True, "--dim_feedforward": True,
    "--hidden_dim": True, "--dropout": True, "--nheads": True, "--num_queries": True, "--pre_norm": False,
    "--no_aux_loss": False, "--set_cost_class": True, "--set_cost_bbox": True, "--set_cost_giou": True,
    "--mask_loss_coef": True, "--dice_loss_coef": True, "--bbox_loss_coef": True, "--giou_loss_coef": True,
    "--eos_coef": True, "--dataset_file": True, "--coco_path": True,
    "--remove_difficult": False, "--output_dir": True, "--device": True, "--seed": True, "--resume": True,
    "--start_epoch": True, "--eval": False, "--num_workers": True, "--world_size": True, "--dist_url": True,
}  # fmt: skip
#: Reference options no command can honour: refused in one line rather than silently ignored.
REFERENCE_REFUSED: dict[str, str] = {}


def _known_names(command: click.Command) -> set[str]:
    return {name for p in command.params for name in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}


def reference_args(command: click.Command, args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` with the reference's underscore spellings turned into this command's dashed names
    (``--batch_size 2`` -> ``--batch-size 2``) and reference options this command does not define left
    out; returns (args, the options left out)."""
    known, out, ignored = _known_names(command), [], []
    items = iter(args)
    for arg in items:
        name, eq, value = arg.partition("=")
        if arg == "--" or not arg.startswith("--") or name in known:
            out.append(arg)
            if arg == "--":
                out.extend(items)
            continue
        if name in REFERENCE_REFUSED:
            raise click.UsageError(REFERENCE_REFUSED[name])
        dashed = name.replace("_", "-")
        if dashed in known:
            out.append(dashed + eq + value)
        elif name in REFERENCE_OPTIONS:
            ignored.append(arg if eq or not REFERENCE_OPTIONS[name] else f"{arg} {next(items, '')}".strip())
        else:
            out.append(arg)
    return out, ignored


class ReferenceSpellings(click.Command):
    """A command that also runs the reference ``main.py``'s command line: underscore spellings are its own
    options' aliases, reference options it has no use for are ignored with one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args, ignored = reference_args(self, list(args))
        ignored = [a for a in ignored if a != "--eval"]  # the reference's eval switch: this command is eval
        if ignored:
            click.echo(f"{self.name}: ignoring the reference option(s) {' '.join(ignored)} (no effect here)", err=True)
        return super().parse_args(ctx, args)


_GROUP_OPTIONS = ("-v", "-vv", "-vvv", "--verbose", "--version", "-h", "--help")


def reference_command_line(args: list[str]) -> list[str]:
    """``detrtool`` given the reference's command line (``python main.py`` replaced by ``detrtool``: options
    and no command): the command it means is put in, ``eval`` when ``--eval`` is among them, else ``train``."""
    index = next((i for i, a in enumerate(args) if a not in _GROUP_OPTIONS[:4]), len(args))
    if index == len(args) or args[index] in _GROUP_OPTIONS or not args[index].startswith("--"):
        return list(args)
    command = "eval" if "--eval" in args[index:] else "train"
    return [*args[:index], command, *args[index:]]


def panoptic_threshold_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--panoptic-threshold`` (0..1, default the reference's 0.85): the class score a segmentation model's
    query needs to become a segment of the panoptic map (``eval``, ``predict --panoptic``)."""
    return click.option("--panoptic-threshold", type=FiniteFloatRange(0, 1), default=0.85, show_default=True,
                        help="Segmentation: the class score a query needs to become a segment of the panoptic "
                             "map (the reference's 0.85).")(func)
