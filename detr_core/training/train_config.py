"""``TrainConfig``: everything a training run needs, resolved once at the edge (the CLI).

Precedence, lowest first: the preset (the reference's settings, or the small CPU configuration when no
dataset is named), the checkpoint being resumed or fine-tuned from (its architecture; a detrtool
checkpoint also its training settings), the YAML file (``--config``), then the command-line options.
YAML layout: sections ``model:``, ``loss:``, ``data:`` and top-level run settings (a model / loss /
data field may also be given at top level).

Valid values: every numeric setting has its range in ONE table, :data:`OPTION_RANGES`; the CLI builds its
click types from it (``cli/train.py``) and :func:`check_settings` applies it, with the field types, to a
``--config`` YAML and to a checkpoint's stored config (one error line naming the file, key and value).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from detr_core.atomic import atomic_write
from detr_core.config import LossConfig, ModelConfig, from_dict, to_dict
from detr_core.data.naming import DatasetSource

#: ``num_classes`` of 0 means "max category id + 1 of the training set".
NUM_CLASSES_FROM_DATA = 0


@dataclass(frozen=True)
class TrainConfig:
    """A training run (reference defaults: DETR-R50 schedule of facebookresearch/detr)."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(num_classes=NUM_CLASSES_FROM_DATA))
    loss: LossConfig = field(default_factory=LossConfig)
    data: DatasetSource = field(default_factory=DatasetSource)
    output_dir: str = "runs/detr"
    epochs: int = 300
    time_budget: float = 0.0  # minutes; > 0: the epoch count (at most ``epochs``) fitted to measured steps
    batch_size: int = 2
    num_workers: int = 2
    cache_images: bool = False  # keep decoded training/validation images in memory (detr_core.data.image_cache)
    seed: int = 42
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    lr_drop: int = 200
    lr_schedule: str = "step"  # "step" (x0.1 after lr_drop epochs) or "cosine" (warm-up, then cosine)
    warmup_steps: int = 0
    clip_max_norm: float = 0.1
    device: str = "cpu"
    amp: str = "none"  # "none", "bf16" or "fp16" (CUDA only)
    resume: str | None = None
    init: str | None = None
    frozen_weights: str | None = None
    backbone_weights: str | None = None
    pretrain_epochs: int = 0  # backbone pre-training on object crops (detr_core.training.crop_pretrain) before DETR
    pretrain_crop_size: int = 64
    pretrain_lr: float = 5e-4
    save_every: int = 100
    eval_every: int = 1
    pad_to: tuple[int, int] | None = None
    transforms: str = "auto"  # "detr" (reference presets), "shapes" (small images) or "auto"
    image_size: int = 128  # the shapes presets' base size
    vertical_flip: bool = False  # also flip training images upside down (data with no up and down)
    evaluator: str = "faster"
    attention_impl: str = "sdpa"
    progress: bool = True

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def transforms_preset(self) -> str:
        if self.transforms != "auto":
            return self.transforms
        return "shapes" if self.data.is_default else "detr"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "loss", "data")}
        out["pad_to"] = list(self.pad_to) if self.pad_to else None
        return {"model": to_dict(self.model), "loss": to_dict(self.loss), "data": to_dict(self.data), **out}


#: The CPU configuration trained when no dataset is named (README "The embedded default" has its measured AP).
#: The backbone is first pre-trained on object crops (3 passes, ~1 min). lr 6e-4 with no gradient clipping:
#: clipping at 0.1 makes lr >= 3e-4 collapse to image-independent outputs, and with the pre-trained backbone
#: lr 6e-4 beat 2e-4 / 4e-4 / 8e-4 in a 15-epoch sweep (README). A third decoder layer costs ~3 % of the
#: images/s and gave +0.017 AP over 2 layers trained one epoch longer. 16 epochs take 9.5 minutes on 2 cores.
SHAPES_PRESET: dict[str, Any] = {
    "model": {"backbone": "small_cnn", "hidden_dim": 128, "nheads": 8, "enc_layers": 2, "dec_layers": 3,
              "dim_feedforward": 512, "dropout": 0.0, "num_queries": 10},
    "loss": {"eos_coef": 0.2, "ce_loss_coef": 2.5},
    "vertical_flip": True, "pretrain_epochs": 3, "epochs": 16, "time_budget": 10.0, "batch_size": 8, "num_workers": 0, "cache_images": True,
    "lr": 6e-4, "lr_backbone": 6e-4,
    "clip_max_norm": 0.0, "lr_schedule": "cosine", "warmup_steps": 300, "save_every": 0, "output_dir": "runs/shapes",
}

#: ``train --masks`` with no dataset: the shapes preset on the panoptic shapes (things and stuff), fewer epochs
#: (a step with the mask head costs ~1.8x a detector's) so that the run stays within 15 minutes on 2 cores.
SHAPES_PANOPTIC_PRESET: dict[str, Any] = {"epochs": 9, "output_dir": "runs/shapes-panoptic"}


@dataclass(frozen=True)
class Range:
    """A closed or open interval; ``None`` bounds are unbounded. Non-finite numbers are never inside."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = self.min is None or (value > self.min if self.min_open else value >= self.min)
        below = self.max is None or (value < self.max if self.max_open else value <= self.max)
        return above and below

    def describe(self) -> str:
        if self.max is None:
            return f"{'>' if self.min_open else '>='} {self.min}"
        return f"in {'(' if self.min_open else '['}{self.min}, {self.max}{')' if self.max_open else ']'}"


#: The valid range of every numeric setting (model, loss and run), by field name: the one table.
OPTION_RANGES: dict[str, Range] = {
    # model
    # (every size has a ceiling: `--hidden-dim 10**9` built a model of that width before anything said no)
    "hidden_dim": Range(1, 8192), "nheads": Range(1, 1024), "enc_layers": Range(0, 128), "dec_layers": Range(1, 128),
    "dim_feedforward": Range(1, 65536), "dropout": Range(0, 1, max_open=True), "num_queries": Range(1, 65536),
    "num_classes": Range(0, 65536),  # 0: max category id + 1 of the training set
    # loss
    "set_cost_class": Range(0), "set_cost_bbox": Range(0), "set_cost_giou": Range(0), "ce_loss_coef": Range(0),
    "bbox_loss_coef": Range(0), "giou_loss_coef": Range(0), "eos_coef": Range(0, 1, min_open=True),
    "mask_loss_coef": Range(0), "dice_loss_coef": Range(0),
    # run
    "epochs": Range(1, 1_000_000), "time_budget": Range(0, 100_000), "batch_size": Range(1, 4096),
    "num_workers": Range(0, 256), "seed": Range(0, 2**63 - 1),
    "lr": Range(0, min_open=True), "lr_backbone": Range(0), "weight_decay": Range(0), "lr_drop": Range(0),
    "warmup_steps": Range(0), "clip_max_norm": Range(0), "pretrain_epochs": Range(0, 1_000_000), "pretrain_crop_size": Range(1, 4096),
    "pretrain_lr": Range(0, min_open=True), "save_every": Range(0), "eval_every": Range(1), "image_size": Range(1, 4096),
}


#: The allowed values of the string settings that have a fixed set (YAML and stored configs; click Choices).
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "lr_schedule": ("step", "cosine"), "transforms": ("auto", "detr", "shapes"), "amp": ("none", "bf16", "fp16"),
    "evaluator": ("faster", "pycocotools"), "position_embedding": ("sine", "learned"),
}


def _field_types() -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for cls in (DatasetSource, LossConfig, ModelConfig, TrainConfig):
        hints.update(typing.get_type_hints(cls))
    return {k: v for k, v in hints.items() if k not in ("model", "loss", "data")}


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return "a list of strings" if args[-1] is Ellipsis else f"a list of {len(args)} integers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        elem, n = (args[0], None) if args[-1] is Ellipsis else (args[0], len(args))
        return isinstance(value, (list, tuple)) and (n is None or len(value) == n) and all(_fits(v, elem) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def setting_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``key: value`` (its type, then its range), or None. Unknown keys are not judged here."""
    hint = _FIELD_TYPES.get(key)
    if hint is None:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if value is None:
        return "is null: give a value or leave the key out"
    if not _fits(value, hint):
        return f"must be {_type_name(hint)}, got {value!r} ({type(value).__name__})"
    limits = OPTION_RANGES.get(key)
    if limits is not None and value not in limits:
        return f"= {value!r} is out of range: must be {limits.describe()}"
    if key in OPTION_CHOICES and value not in OPTION_CHOICES[key]:
        return f"must be one of {', '.join(OPTION_CHOICES[key])}, got {value!r}"
    return None


def check_settings(settings: dict[str, Any], *, source: str) -> None:
    """Refuse the first bad value of a YAML / stored config (flat or sectioned) in one line naming ``source``."""
    for key, value in _flat_items(settings, source=source):
        problem = setting_problem(key, value)
        if problem:
            raise ValueError(f"{source}: {key} {problem}")


def _flat_items(settings: dict[str, Any], *, source: str) -> list[tuple[str, Any]]:
    items = []
    for key, value in settings.items():
        if key in ("model", "loss", "data"):
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{source}: {key} must be a mapping of settings, got {value!r}")
            items += list((value or {}).items())
        else:
            items.append((key, value))
    return items


_MODEL_KEYS = {f.name for f in fields(ModelConfig)}
_LOSS_KEYS = {f.name for f in fields(LossConfig)}
_DATA_KEYS = set(DatasetSource.field_names())
_RUN_KEYS = {f.name for f in fields(TrainConfig)} - {"model", "loss", "data"}
_FIELD_TYPES = _field_types()


def split_sections(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route flat or sectioned settings into ``model``/``loss``/``data``/``run`` dicts (None values dropped)."""
    out: dict[str, dict[str, Any]] = {"model": {}, "loss": {}, "data": {}, "run": {}}
    for key, value in flat.items():
        if key in ("model", "loss", "data") and isinstance(value, dict):
            out[key].update({k: v for k, v in value.items() if v is not None})
        elif value is None:
            continue
        elif key in _MODEL_KEYS:
            out["model"][key] = value
        elif key in _LOSS_KEYS:
            out["loss"][key] = value
        elif key in _DATA_KEYS:
            out["data"][key] = value
        elif key in _RUN_KEYS:
            out["run"][key] = value
        else:
            raise ValueError(f"unknown setting {key!r}; see `detrtool train --help` for the known ones")
    return out


def _merge(layers: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {"model": {}, "loss": {}, "data": {}, "run": {}}
    for layer in layers:
        for section, values in layer.items():
            merged[section].update(values)
    return merged


def checkpoint_layer(path: str) -> dict[str, dict[str, Any]]:
    """Settings a checkpoint implies: a detrtool one its whole config, an official one its architecture."""
    from detr_core.checkpoint import (  # torch: only when a checkpoint is read
        checked_stored_config,
        infer_config,
        read_checkpoint,
        split_panoptic_state,
    )

    ckpt = read_checkpoint(path)
    stored = ckpt.get("config")
    if isinstance(stored, dict) and isinstance(stored.get("model"), dict):
        _check_stored(stored, path)
        checked_stored_config(ckpt, path)  # sizes against the weights, before a model of them is built
        layer = split_sections({k: v for k, v in stored.items() if k in ("model", "loss")})
        run = stored.get("run")
        if isinstance(run, dict):
            layer = _merge([layer, split_sections({k: v for k, v in run.items() if k in _RUN_KEYS})])
            layer["data"] = dict(stored.get("data") or {})
        return layer
    state, _ = split_panoptic_state(ckpt["model"])  # a panoptic file: its detector's architecture
    return split_sections({"model": to_dict(infer_config(state, source=str(path)))})


def _check_stored(stored: dict[str, Any], path: str) -> None:
    run = stored.get("run") if isinstance(stored.get("run"), dict) else {}
    sections = {k: stored.get(k) for k in ("model", "loss", "data") if k in stored}
    try:
        check_settings({**{k: v for k, v in run.items() if k in _RUN_KEYS}, **sections}, source=f"{path} (stored config)")
    except ValueError as exc:
        from detr_core.checkpoint import CheckpointError

        raise CheckpointError(str(exc)) from None


def resolve_train_config(cli: dict[str, Any], yaml_settings: dict[str, Any] | None = None, *,
                         yaml_source: str = "--config") -> TrainConfig:
    """The run's ``TrainConfig`` from CLI values (None = not given) over YAML over checkpoint over preset.
    The YAML settings are checked (types, :data:`OPTION_RANGES`) with errors naming ``yaml_source``."""
    check_settings(yaml_settings or {}, source=yaml_source)
    try:
        yaml_layer = split_sections(yaml_settings or {})
    except ValueError as exc:
        raise ValueError(f"{yaml_source}: {exc}") from None
    cli_layer = split_sections(cli)
    data = {**yaml_layer["data"], **cli_layer["data"]}
    run = {**yaml_layer["run"], **cli_layer["run"]}
    layers = []
    if DatasetSource(**data).is_default:
        layers.append(split_sections(SHAPES_PRESET))
        if {**yaml_layer["model"], **cli_layer["model"]}.get("masks"):
            layers.append(split_sections(SHAPES_PANOPTIC_PRESET))
    for key in ("resume", "init"):
        if run.get(key):
            ckpt_layer = checkpoint_layer(str(run[key]))
            if key == "init":  # --init takes the weights' architecture, never their run settings
                ckpt_layer = {"model": ckpt_layer["model"], "loss": {}, "data": {}, "run": {}}
                if data.get("class_map"):  # the classes are the dataset's; mapped head rows are kept
                    ckpt_layer["model"] = {k: v for k, v in ckpt_layer["model"].items()
                                           if k not in ("num_classes", "class_names")}
            ckpt_layer["run"].pop("resume", None)
            ckpt_layer["run"].pop("init", None)
            layers.append(ckpt_layer)
    merged = _merge([*layers, yaml_layer, cli_layer])
    return build_train_config(merged)


def build_train_config(sections: dict[str, dict[str, Any]]) -> TrainConfig:
    model = {"num_classes": NUM_CLASSES_FROM_DATA, **sections["model"]}
    run = dict(sections["run"])
    if run.get("pad_to") is not None:
        run["pad_to"] = tuple(int(v) for v in run["pad_to"])
    config = from_dict(TrainConfig, {**run, "model": ModelConfig.from_dict(model),
                                     "loss": LossConfig.from_dict(sections["loss"]),
                                     "data": from_dict(DatasetSource, sections["data"])})
    check_train_config(config)
    return config


def check_train_config(config: TrainConfig) -> None:
    """The whole resolved config: every range of :data:`OPTION_RANGES` and the rules between settings."""
    problems = [f"{k} {p}" for k, v in _numeric_values(config).items() if (p := setting_problem(k, v))]
    loss = config.loss
    if loss.set_cost_class == loss.set_cost_bbox == loss.set_cost_giou == 0:
        problems.append("set_cost_class, set_cost_bbox and set_cost_giou are all 0: the matcher needs one")
    if config.model.hidden_dim % config.model.nheads:
        problems.append(f"hidden_dim {config.model.hidden_dim} is not divisible by nheads {config.model.nheads}")
    if config.resume and config.init:
        problems.append("give --resume or --init, not both")
    if problems:
        raise ValueError("; ".join(problems))


def _numeric_values(config: TrainConfig) -> dict[str, Any]:
    sections = config.to_dict()
    flat = {**sections.pop("model"), **sections.pop("loss"), **sections}
    return {k: v for k, v in flat.items() if k in OPTION_RANGES or k in OPTION_CHOICES}


def save_config_yaml(config: TrainConfig, path: str | Path) -> Path:
    """The resolved config as YAML (loadable again with ``--config``), written atomically."""
    data = config.to_dict()
    data.pop("resume", None)
    data.pop("init", None)
    text = yaml.safe_dump(data, sort_keys=False)
    return atomic_write(path, lambda handle: handle.write(text), binary=False)
