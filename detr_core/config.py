"""Frozen configuration dataclasses: the model, the loss and the training run.

Config objects live at the edges (CLI, builders, checkpoints). Everything below the builders takes
explicit keyword arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, refusing unknown keys with one clear error."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**data)  # type: ignore[call-arg]


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (tuples become lists, so it is YAML/JSON friendly)."""
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a DETR model; every field maps to a keyword of the model builders."""

    backbone: str = "resnet50"
    dilation: bool = False
    position_embedding: str = "sine"  # "sine" or "learned"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_queries: int = 100
    num_classes: int = 91
    pre_norm: bool = False
    aux_loss: bool = True
    class_names: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        if "class_names" in data and data["class_names"] is not None:
            data["class_names"] = tuple(data["class_names"])
        return from_dict(cls, data)


@dataclass(frozen=True)
class LossConfig:
    """Hungarian matcher costs and set-criterion weights (the reference defaults)."""

    set_cost_class: float = 1.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    ce_loss_coef: float = 1.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    eos_coef: float = 0.1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossConfig:
        return from_dict(cls, data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict with one clear error on bad input."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read YAML config: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data
