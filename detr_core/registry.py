"""Model builders looked up by name: ``get_model("detr_resnet50", num_classes=91)``.

Every builder is keyword-only and returns an untrained ``DETR``, or for the ``*_panoptic`` builders a
``DETRsegm`` (``weights=None``: nothing is downloaded; pass ``backbone_weights`` to start from a local
ImageNet state dict).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from detr_core.config import ModelConfig
from detr_core.models import small_backbone as _small_backbone  # noqa: F401  (registers "small_cnn")
from detr_core.models.backbone import BACKBONES, register_backbone  # noqa: F401  (re-exported)
from detr_core.models.detr import DETR, Joiner
from detr_core.models.position import build_position_encoding
from detr_core.models.segmentation import DETRsegm, check_mask_head_dims
from detr_core.models.transformer import Transformer

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


def build_model(config: ModelConfig, *, train_backbone: bool = True, backbone_weights: str | Path | None = None,
                attention_impl: str = "sdpa", freeze_detr: bool = False) -> nn.Module:
    """The generic builder: a ``DETR`` exactly as ``config`` describes it, or with ``config.masks`` the
    panoptic ``DETRsegm`` around one (``freeze_detr``: only the mask head trains)."""
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
    if config.masks:
        check_mask_head_dims(hidden_dim=config.hidden_dim, nheads=config.nheads)
    backbone = BACKBONES[config.backbone](
        dilation=config.dilation, train_backbone=train_backbone, weights_path=backbone_weights
    )
    position = build_position_encoding(config.position_embedding, hidden_dim=config.hidden_dim)
    transformer = Transformer(
        d_model=config.hidden_dim, nhead=config.nheads, num_encoder_layers=config.enc_layers,
        num_decoder_layers=config.dec_layers, dim_feedforward=config.dim_feedforward, dropout=config.dropout,
        normalize_before=config.pre_norm, attention_impl=attention_impl,
    )
    model: nn.Module = DETR(backbone=Joiner(backbone, position), transformer=transformer,
                            num_classes=config.num_classes, num_queries=config.num_queries, aux_loss=config.aux_loss)
    if config.masks:
        model = DETRsegm(model, freeze_detr=freeze_detr)
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
    build_keys = {"train_backbone", "backbone_weights", "attention_impl", "freeze_detr"}
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



@register_model
def detr_resnet50_panoptic(*, num_classes: int = 250, **overrides: Any) -> DETRsegm:
    """DETR-R50 with the panoptic mask head (official: 43.4 PQ on COCO panoptic val2017)."""
    return _official("resnet50", False, {"num_classes": num_classes, "masks": True, **overrides})


@register_model
def detr_resnet50_dc5_panoptic(*, num_classes: int = 250, **overrides: Any) -> DETRsegm:
    """DETR-R50-DC5 with the panoptic mask head (official: 44.6 PQ)."""
    return _official("resnet50", True, {"num_classes": num_classes, "masks": True, **overrides})


@register_model
def detr_resnet101_panoptic(*, num_classes: int = 250, **overrides: Any) -> DETRsegm:
    """DETR-R101 with the panoptic mask head (official: 45.1 PQ)."""
    return _official("resnet101", False, {"num_classes": num_classes, "masks": True, **overrides})
