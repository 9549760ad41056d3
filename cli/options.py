"""Reusable click options. ``dataset_options`` names the data of train/eval/bench/predict commands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from detr_core.data.batching import parse_hw
from detr_core.data.sources import DatasetSource

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


_PATH = click.Path(exists=True)


def dataset_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--coco-path --train-images --train-ann --val-images --val-ann --voc-root --voc-year
    --remove-difficult --allow-outside-images --pad-to``; ``pad_to`` arrives parsed as ``(H, W)`` or None."""
    options = [
        click.option("--coco-path", type=_PATH, help="COCO layout: DIR/{train,val}2017 + DIR/annotations/."),
        click.option("--train-images", type=_PATH, help="Training images folder (overrides --coco-path)."),
        click.option("--train-ann", type=_PATH, help="Training COCO annotation JSON."),
        click.option("--val-images", type=_PATH, help="Validation images folder (overrides --coco-path)."),
        click.option("--val-ann", type=_PATH, help="Validation COCO annotation JSON."),
        click.option("--voc-root", type=_PATH, help="A VOCdevkit (or VOC2007/VOC2012) folder."),
        click.option("--voc-year", type=click.Choice(["2007", "2012"]), default="2007", show_default=True),
        click.option("--remove-difficult", is_flag=True, help="VOC: drop objects flagged difficult."),
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

    No dataset option given → the synthetic shapes default.
    """
    values = {k: options[k] for k in DatasetSource.field_names() if k in options and options[k] is not None}
    for key in ("voc_year",):
        values[key] = str(values.get(key, "2007"))
    for flag in ("remove_difficult", "allow_outside_images"):
        values[flag] = bool(values.get(flag, False))
    return DatasetSource(**values)


def pop_dataset_options(kwargs: dict[str, Any]) -> tuple[DatasetSource, tuple[int, int] | None]:
    """Remove the ``dataset_options`` keys from ``kwargs``; return ``(DatasetSource, pad_to)``."""
    picked = {k: kwargs.pop(k) for k in DATASET_OPTION_NAMES if k in kwargs}
    return dataset_source_from_options(picked), picked.get("pad_to")
