"""Model builders looked up by name: ``get_model("detr_resnet50", num_classes=91)``.

Every builder is keyword-only and returns an untrained ``DETR`` (``weights=None``: nothing is
downloaded; pass ``backbone_weights`` to start from a local ImageNet state dict).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from detr_core.config import ModelConfig
from detr_core.models import small_backbone as _small_backbone  # noqa: F401  (registers "small_cnn")
from detr_core.models.backbone import BACKBONES, register_backbone  # noqa: F401  (re-exported)
from detr_core.models.detr import DETR, Joiner
from detr_core.models.position import build_position_encoding
from detr_core.models.transformer import Transformer

MODELS: dict[str, Callable[..., DETR]] = {}


def register_model(fn: Callable[..., DETR]) -> Callable[..., DETR]:
    MODELS[fn.__name__] = fn
    return fn


def build_model(config: ModelConfig, *, train_backbone: bool = True, backbone_weights: str | Path | None = None,
                attention_impl: str = "sdpa") -> DETR:
    """The generic builder: a DETR exactly as ``config`` describes it."""
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
    backbone = BACKBONES[config.backbone](
        dilation=config.dilation, train_backbone=train_backbone, weights_path=backbone_weights
    )
    position = build_position_encoding(config.position_embedding, hidden_dim=config.hidden_dim)
    transformer = Transformer(
        d_model=config.hidden_dim, nhead=config.nheads, num_encoder_layers=config.enc_layers,
        num_decoder_layers=config.dec_layers, dim_feedforward=config.dim_feedforward, dropout=config.dropout,
        normalize_before=config.pre_norm, attention_impl=attention_impl,
    )
    model = DETR(backbone=Joiner(backbone, position), transformer=transformer, num_classes=config.num_classes,
                 num_queries=config.num_queries, aux_loss=config.aux_loss)
    model.config = config  # type: ignore[assignment]  # carried along for checkpoints and exports
    return model


def get_model(name: str, **kwargs: Any) -> DETR:
    """Build the registered model ``name`` with keyword overrides."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def list_models() -> list[str]:
    return sorted(MODELS)


def _official(backbone: str, dilation: bool, overrides: dict[str, Any]) -> DETR:
    build_keys = {"train_backbone", "backbone_weights", "attention_impl"}
    build_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in build_keys}
    config = ModelConfig(backbone=backbone, dilation=dilation).replace(**overrides)
    return build_model(config, **build_kwargs)


@register_model
def detr_resnet50(*, num_classes: int = 91, **overrides: Any) -> DETR:
    """DETR-R50 (official: 42.0 AP on COCO val2017)."""
    return _official("resnet50", False, {"num_classes": num_classes, **overrides})


@register_model
def detr_resnet50_dc5(*, num_classes: int = 91, **overrides: Any) -> DETR:
    """DETR-R50 with a dilated last stage (stride 16; official: 43.3 AP)."""
    return _official("resnet50", True, {"num_classes": num_classes, **overrides})


@register_model
def detr_resnet101(*, num_classes: int = 91, **overrides: Any) -> DETR:
    """DETR-R101 (official: 43.5 AP)."""
    return _official("resnet101", False, {"num_classes": num_classes, **overrides})


@register_model
def detr_resnet101_dc5(*, num_classes: int = 91, **overrides: Any) -> DETR:
    """DETR-R101 with a dilated last stage (official: 44.9 AP)."""
    return _official("resnet101", True, {"num_classes": num_classes, **overrides})

