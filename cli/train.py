"""``detrtool train``: a DETR training run (the reference's main.py options, click-style, plus --config).

Every option defaults to "not given" so that precedence is CLI > --config YAML > checkpoint > preset.
``--nproc N`` re-launches the resolved run under ``torchrun --nproc_per_node N -m cli.main train``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from cli.options import (
    DATASET_OPTION_NAMES,
    FiniteFloatRange,
    ReferenceSpellings,
    RegularFile,
    dataset_options,
    pop_dataset_options,
)
from detr_core.atomic import atomic_write_text, temp_folder
from detr_core.config import LossConfig, ModelConfig, check_section_keys, load_yaml
from detr_core.data.naming import DatasetSource
from detr_core.training.output_dir import OutputDirError, locked_output_dir
from detr_core.training.train_config import OPTION_CHOICES, OPTION_RANGES, TrainConfig, resolve_train_config

log = logging.getLogger(__name__)

_FILE = RegularFile()


def ranged(name: str, kind: type) -> click.ParamType:
    """The click type of setting ``name`` from the one table, ``train_config.OPTION_RANGES``."""
    limits = OPTION_RANGES[name]
    if kind is int:
        return click.IntRange(limits.min, limits.max, min_open=limits.min_open, max_open=limits.max_open)
    return FiniteFloatRange(limits.min, limits.max, min_open=limits.min_open, max_open=limits.max_open)


def _num(name: str, kind: type, **kwargs: Any) -> Any:
    """``--NAME`` (underscores as dashes) typed and ranged by :func:`ranged`."""
    return click.option(f"--{name.replace('_', '-')}", type=ranged(name, kind), **kwargs)


def _model_options(func: Any) -> Any:
    options = [
        click.option("--backbone", help="resnet18/34/50/101 or small_cnn (the CPU default)."),
        click.option("--dilation/--no-dilation", default=None, help="Dilated last stage (DC5)."),
        click.option("--position-embedding", type=click.Choice(OPTION_CHOICES["position_embedding"])),
        _num("enc_layers", int), _num("dec_layers", int),
        _num("dim_feedforward", int), _num("hidden_dim", int),
        _num("nheads", int), _num("num_queries", int),
        _num("num_classes", int, help="Default: max category id + 1 of the training set."),
        _num("dropout", float),
        click.option("--pre-norm/--no-pre-norm", default=None),
        click.option("--aux-loss/--no-aux-loss", default=None, help="Auxiliary decoding losses (default on)."),
        click.option("--masks/--no-masks", default=None,
                     help="Train the panoptic model: a mask head on the detector (--init DET.pth starts it from a "
                          "trained detector; --frozen-weights DET.pth trains the mask head alone)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _loss_options(func: Any) -> Any:
    names = ("set-cost-class", "set-cost-bbox", "set-cost-giou", "ce-loss-coef", "bbox-loss-coef",
             "giou-loss-coef", "eos-coef", "mask-loss-coef", "dice-loss-coef")
    for name in reversed(names):
        func = _num(name.replace("-", "_"), float)(func)
    return func


def _run_options(func: Any) -> Any:
    options = [
        click.option("--config", "config_file", type=_FILE, help="YAML settings (CLI options override them)."),
        click.option("--output-dir", type=click.Path(file_okay=False)),
        _num("epochs", int),
        _num("time_budget", float, metavar="MIN",
             help="Fit the epoch count (at most --epochs) to MIN training minutes from the first measured steps; "
                  "the count is recorded in config.yaml (the shapes default: 10; 0: off)."),
        _num("batch_size", int),
        _num("num_workers", int), _num("seed", int),
        click.option("--cache-images/--no-cache-images", default=None,
                     help="Keep decoded images in memory (about H*W*3 bytes each; pays with --num-workers 0)."),
        _num("lr", float), _num("lr_backbone", float, help="0 freezes the backbone."),
        _num("weight_decay", float), _num("lr_drop", int),
        click.option("--lr-schedule", type=click.Choice(OPTION_CHOICES["lr_schedule"])),
        _num("warmup_steps", int),
        _num("clip_max_norm", float, help="Gradient clipping (0 = off)."),
        click.option("--device", help="cpu or cuda."),
        click.option("--amp", type=click.Choice(OPTION_CHOICES["amp"]),
                     help="Mixed precision: bf16 or fp16 on CUDA; bf16 on a CPU that runs it natively "
                          "(AVX512-BF16, AMX-BF16), refused elsewhere."),
        click.option("--resume", type=_FILE, help="Continue a detrtool run, or start from an official checkpoint."),
        click.option("--init", type=_FILE, help="Start from these weights (heads of another size dropped)."),
        click.option("--frozen-weights", type=_FILE,
                     help="Load a detector and train only its heads (with --masks: only the mask head)."),
        click.option("--backbone-weights", type=_FILE, help="Local ImageNet weights for the backbone."),
        _num("pretrain_epochs", int,
             help="First train the backbone this many passes to classify object crops (0 = off)."),
        _num("pretrain_crop_size", int, help="Side of the object crops in pixels (native scale)."),
        _num("pretrain_lr", float, help="AdamW lr of the backbone pre-training."),
        _num("save_every", int, help="Also keep checkpoint_NNNN.pth every N epochs (0 = never)."),
        _num("eval_every", int, help="Evaluate every N epochs (and after the last)."),
        click.option("--transforms", type=click.Choice(OPTION_CHOICES["transforms"])),
        _num("image_size", int, help="Base size of the shapes transforms."),
        click.option("--vertical-flip/--no-vertical-flip", default=None,
                     help="Also flip training images upside down (data with no up and down; the shapes default)."),
        click.option("--evaluator", type=click.Choice(OPTION_CHOICES["evaluator"])),
        click.option("--progress/--no-progress", default=None),
        click.option("--nproc", type=click.IntRange(min=1, max=256), default=1, show_default=True,
                     help="Processes (torchrun shortcut)."),
        click.option("--eval", "eval_only", is_flag=True,
                     help="Evaluate --resume instead of training (the reference's --eval): runs `detrtool eval`."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_config(kwargs: dict[str, Any]) -> TrainConfig:
    """The resolved run config of the command's keyword arguments."""
    kwargs = dict(kwargs)
    config_file = kwargs.pop("config_file", None)
    kwargs.pop("nproc", None)
    source, pad_to = pop_dataset_options(kwargs)
    given = {k: v for k, v in vars(source).items() if v != getattr(type(source)(), k)}
    cli = {**kwargs, "data": given, "pad_to": pad_to}
    if not config_file:
        return resolve_train_config(cli)
    settings = load_yaml(config_file)
    check_section_keys(settings, {"model": ModelConfig, "loss": LossConfig, "data": DatasetSource},
                       source=str(config_file))
    return resolve_train_config(cli, settings, yaml_source=str(config_file))


def launch_torchrun(config: TrainConfig, nproc: int) -> int:
    """Run ``config`` under torchrun with ``nproc`` processes; returns its exit code."""
    folder = Path(config.output_dir)
    with locked_output_dir(folder):  # refuse here, in one line, a folder another run holds (rank 0 locks it again)
        pass
    # The resolved settings travel in a YAML in the system's temp folder (not the output folder, where a
    # killed launcher would leave it behind); removed when torchrun returns.
    with temp_folder("launch") as scratch:
        path = atomic_write_text(Path(scratch) / "launch.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cli.main", "train", "--config", str(path)]
        log.info("launching: %s", " ".join(cmd))
        return subprocess.call(cmd)


def _quiet_non_main_ranks() -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)


#: train's options that ``train --eval`` hands to ``detrtool eval`` (train name -> eval name).
EVAL_OPTIONS = {"resume": "checkpoint", "output_dir": "output_dir", "batch_size": "batch_size",
                "num_workers": "num_workers", "device": "device", "amp": "amp", "evaluator": "evaluator",
                "image_size": "image_size", "nheads": "nheads", "dilation": "dilation", "aux_loss": "aux_loss",
                "progress": "progress", "masks": "masks"}


def eval_instead(kwargs: dict[str, Any]) -> None:
    """``train --eval``: ``detrtool eval`` on ``--resume`` with the dataset and the options both commands
    know (as the reference's main.py --eval); training-only options have no effect (one line names them)."""
    from cli.evaluate import evaluate

    if not kwargs.get("resume"):
        raise click.UsageError("--eval evaluates --resume CHECKPOINT: give it")
    given = {EVAL_OPTIONS[k]: v for k, v in kwargs.items() if k in EVAL_OPTIONS and v is not None}
    given.update({k: v for k, v in kwargs.items() if k in DATASET_OPTION_NAMES})
    if kwargs.get("transforms") not in (None, "auto"):
        given["transforms"] = kwargs["transforms"]
    unused = sorted(k for k, v in kwargs.items() if v not in (None, False, 1) and k not in EVAL_OPTIONS
                    and k not in DATASET_OPTION_NAMES and k not in ("transforms", "eval_only"))
    if unused:
        click.echo(f"train --eval: training options with no effect on an evaluation: {', '.join(unused)}", err=True)
    click.get_current_context().invoke(evaluate, **given)


@click.command("train", cls=ReferenceSpellings)
@dataset_options
@_model_options
@_loss_options
@_run_options
def train(**kwargs: Any) -> None:
    """Train DETR. With no dataset: the synthetic shapes and the small CPU configuration.

    The reference's option spellings work too (--coco_path, --batch_size, --lr_backbone, --no_aux_loss, ...);
    --eval evaluates --resume instead, as the reference's main.py does. With --init and --class-map, the
    class head keeps the rows of the mapped classes (and the no-object row) instead of being trained anew."""
    from detr_core.checkpoint import CheckpointError
    from detr_core.data.coco import DatasetError
    from detr_core.training.engine import NonFiniteLossError
    from detr_core.training.run import TrainingError
    from detr_core.training.run import train as run_training

    if kwargs.pop("eval_only", False):
        return eval_instead(kwargs)
    nproc = kwargs.get("nproc") or 1
    try:
        config = build_config(kwargs)
        if nproc > 1:
            code = launch_torchrun(config, nproc)
            if code:
                raise click.ClickException(f"torchrun exited with code {code}")
            click.echo(f"done: {config.output_dir}")
            return
        _quiet_non_main_ranks()
        out = run_training(config)
    except (TrainingError, CheckpointError, DatasetError, NonFiniteLossError, OutputDirError, ValueError) as exc:
        raise click.ClickException(_one_line(str(exc))) from None
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"done: {out}")


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "training failed"
