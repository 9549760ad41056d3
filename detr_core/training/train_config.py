"""``TrainConfig``: everything a training run needs, resolved once at the edge (the CLI).

Precedence, lowest first: the preset (the reference's settings, or the small CPU configuration when no
dataset is named), the checkpoint being resumed or fine-tuned from (its architecture; a detrtool
checkpoint also its training settings), the YAML file (``--config``), then the command-line options.
YAML layout: sections ``model:``, ``loss:``, ``data:`` and top-level run settings (a model / loss /
data field may also be given at top level).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from detr_core.checkpoint import infer_config, read_checkpoint
from detr_core.config import LossConfig, ModelConfig, from_dict, to_dict
from detr_core.data.sources import DatasetSource

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
    "vertical_flip": True, "pretrain_epochs": 3, "epochs": 16, "batch_size": 8, "num_workers": 0, "cache_images": True,
    "lr": 6e-4, "lr_backbone": 6e-4,
    "clip_max_norm": 0.0, "lr_schedule": "cosine", "warmup_steps": 300, "save_every": 0, "output_dir": "runs/shapes",
}

_MODEL_KEYS = {f.name for f in fields(ModelConfig)}
_LOSS_KEYS = {f.name for f in fields(LossConfig)}
_DATA_KEYS = set(DatasetSource.field_names())
_RUN_KEYS = {f.name for f in fields(TrainConfig)} - {"model", "loss", "data"}


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
    ckpt = read_checkpoint(path)
    stored = ckpt.get("config")
    if isinstance(stored, dict) and isinstance(stored.get("model"), dict):
        layer = split_sections({k: v for k, v in stored.items() if k in ("model", "loss")})
        run = stored.get("run")
        if isinstance(run, dict):
            layer = _merge([layer, split_sections({k: v for k, v in run.items() if k in _RUN_KEYS})])
            layer["data"] = dict(stored.get("data") or {})
        return layer
    state = ckpt["model"]
    if any(k.startswith("detr.") for k in state):
        state = {k[len("detr."):]: v for k, v in state.items() if k.startswith("detr.")}
    return split_sections({"model": to_dict(infer_config(state, source=str(path)))})


def resolve_train_config(cli: dict[str, Any], yaml_settings: dict[str, Any] | None = None) -> TrainConfig:
    """The run's ``TrainConfig`` from CLI values (None = not given) over YAML over checkpoint over preset."""
    yaml_layer = split_sections(yaml_settings or {})
    cli_layer = split_sections(cli)
    data = {**yaml_layer["data"], **cli_layer["data"]}
    run = {**yaml_layer["run"], **cli_layer["run"]}
    layers = []
    if DatasetSource(**data).is_default:
        layers.append(split_sections(SHAPES_PRESET))
    for key in ("resume", "init"):
        if run.get(key):
            ckpt_layer = checkpoint_layer(str(run[key]))
            if key == "init":  # --init takes the weights' architecture, never their run settings
                ckpt_layer = {"model": ckpt_layer["model"], "loss": {}, "data": {}, "run": {}}
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
    problems = []
    if config.epochs < 1 or config.batch_size < 1:
        problems.append("epochs and batch_size must be >= 1")
    if config.lr_schedule not in ("step", "cosine"):
        problems.append(f"lr_schedule must be step or cosine, got {config.lr_schedule!r}")
    if config.transforms not in ("auto", "detr", "shapes"):
        problems.append(f"transforms must be auto, detr or shapes, got {config.transforms!r}")
    if config.model.hidden_dim % config.model.nheads:
        problems.append(f"hidden_dim {config.model.hidden_dim} is not divisible by nheads {config.model.nheads}")
    if config.resume and config.init:
        problems.append("give --resume or --init, not both")
    if problems:
        raise ValueError("; ".join(problems))


def save_config_yaml(config: TrainConfig, path: str | Path) -> Path:
    """The resolved config as YAML (loadable again with ``--config``)."""
    path = Path(path)
    data = config.to_dict()
    data.pop("resume", None)
    data.pop("init", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
