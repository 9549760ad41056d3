"""Hugging Face ``DetrConfig`` (config.json) <-> detrtool :class:`ModelConfig` (+ class names).

Read: both layouts transformers writes — 4.x / the Hub (``use_timm_backbone``, ``backbone``, ``dilation``,
``backbone_config`` for a transformers ResNet) and 5.x (``backbone_config`` with ``model_type``
``timm_backbone`` or ``resnet``, ``output_stride`` 16 for DC5). ``nheads``, ``dilation``, ``num_queries``,
the layer sizes and the class names (``id2label``) all come from the file. Written: the Hub layout, which
transformers 4.x and 5.x both read. What HF DETR cannot express (pre-norm, a non-ResNet backbone) is refused
with one line.

A ``DetrForSegmentation`` config is the same ``DetrConfig``; HF has no things / stuff split, so detrtool keeps
its ``stuff_classes`` in the extra entry ``detrtool_stuff_classes`` (transformers keeps unknown entries as
attributes). A config without it is read as :mod:`detr_core.checkpoint` reads an official panoptic file:
250 classes are COCO panoptic's (ids >= 92 stuff, logged and reported as assumed), else every class is a thing.
"""

from __future__ import annotations

import logging
from typing import Any

from detr_core.checkpoint_state import (
    COCO_PANOPTIC_CLASSES,
    COCO_PANOPTIC_STUFF,
    CheckpointError,
    assume_coco_panoptic_stuff,
)
from detr_core.config import ModelConfig
from detr_core.errors import printable

log = logging.getLogger(__name__)

#: (layer_type, depths) of a transformers ResNetConfig -> torchvision ResNet name.
_RESNET_DEPTHS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                  ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101"}
_WIDTHS = {"basic": [64, 128, 256, 512], "bottleneck": [256, 512, 1024, 2048]}
#: What a ResNetConfig holds when config.json leaves a key out (transformers' defaults: ResNet-50).
_RESNET_DEFAULTS = {"layer_type": "bottleneck", "depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048],
                    "embedding_size": 64, "hidden_act": "relu", "downsample_in_first_stage": False,
                    "downsample_in_bottleneck": False}
TIMM_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
STUFF_KEY = "detrtool_stuff_classes"  #: config.json entry: the stuff class ids of a detrtool segmentation model
#: The largest size a config.json entry may give (classes, queries, widths, layers): a DETR's are far below it;
#: a larger one is a broken file, refused before a model of that size is built.
MAX_SIZE = 65536
#: ModelConfig field -> (config.json key, transformers' default).
_SIZES = {"hidden_dim": ("d_model", 256), "nheads": ("encoder_attention_heads", 8),
          "enc_layers": ("encoder_layers", 6), "dec_layers": ("decoder_layers", 6),
          "dim_feedforward": ("encoder_ffn_dim", 2048), "num_queries": ("num_queries", 100)}


def hf_to_model_config(hf: dict[str, Any], *, source: str) -> ModelConfig:
    """The :class:`ModelConfig` a DETR ``config.json`` describes (class names from ``id2label``)."""
    _check_supported(hf, source=source)
    backbone, dilation = resolve_backbone(hf, source=source)
    if dilation and backbone in ("resnet18", "resnet34"):
        raise CheckpointError(f"{source}: unsupported backbone: DC5 (dilation) with {backbone} (torchvision's "
                              f"basic blocks cannot be dilated)")
    sizes = {field: _positive_int(hf, key, default, source=source) for field, (key, default) in _SIZES.items()}
    return ModelConfig(
        backbone=backbone, dilation=dilation,
        position_embedding=str(hf.get("position_embedding_type", "sine")), **sizes,
        dropout=_dropout(hf, source=source), num_classes=len(_id2label(hf, source=source)),
        class_names=class_names(hf, source=source),
    )


def _positive_int(hf: dict[str, Any], key: str, default: int, *, source: str) -> int:
    """``hf[key]`` (``default`` when absent) as an integer 1..:data:`MAX_SIZE`; one line naming the file and the
    entry otherwise (a ``"six"`` was an int() traceback, a 10**9 a model of that size built before any check)."""
    value = hf.get(key, default)
    if type(value) is not int or not 1 <= value <= MAX_SIZE:
        raise CheckpointError(f"{source}: {key} must be an integer 1..{MAX_SIZE}, got {value!r:.40}")
    return value


def _flag(config: dict[str, Any], key: str, default: bool, *, source: str, where: str = "") -> bool:
    """``config[key]`` (``default`` when absent or null) as a JSON boolean; a string (``"false"``, which
    ``bool()`` reads as True), a number or anything else is one line naming the file and the entry."""
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CheckpointError(f"{source}: {where}{key} must be a JSON boolean (true or false), got {value!r:.40}")
    return value


def _dropout(hf: dict[str, Any], *, source: str) -> float:
    value = hf.get("dropout", 0.1)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise CheckpointError(f"{source}: dropout must be a number 0..1, got {value!r:.40}")
    return float(value)


def segmentation_config(config: ModelConfig, hf: dict[str, Any], *,
                        source: str) -> tuple[ModelConfig, dict[str, Any]]:
    """(``config`` of a ``DetrForSegmentation``: ``masks=True`` and its stuff ids, what was assumed): the ids
    of ``detrtool_stuff_classes``, else COCO panoptic's for 250 classes (``{"stuff_classes": "92..250"}``
    assumed, logged), else none."""
    config = config.replace(masks=True)
    if STUFF_KEY in hf:
        return config.replace(stuff_classes=_stuff_ids(hf[STUFF_KEY], config.num_classes, source=source)), {}
    if config.num_classes == COCO_PANOPTIC_CLASSES:
        return (config.replace(stuff_classes=COCO_PANOPTIC_STUFF),
                assume_coco_panoptic_stuff(source, "DetrForSegmentation"))
    log.info("%s: DetrForSegmentation without stuff ids: every class is a thing in panoptic output", source)
    return config, {}


def _stuff_ids(raw: Any, num_classes: int, *, source: str) -> tuple[int, ...]:
    """``detrtool_stuff_classes`` as class ids, or one line naming the file and the entry."""
    ok = isinstance(raw, list) and all(type(i) is int and 0 <= i <= num_classes for i in raw)
    if not ok:
        raise CheckpointError(f"{source}: {STUFF_KEY} must be a list of class ids 0..{num_classes}, got {raw!r:.60}")
    return tuple(raw)


def _check_supported(hf: dict[str, Any], *, source: str) -> None:
    """One :class:`CheckpointError` for a config detrtool's DETR cannot reproduce exactly."""
    if hf.get("model_type") != "detr":
        raise CheckpointError(f"{source}: unsupported model_type {hf.get('model_type')!r} (detrtool reads DETR: "
                              f"model_type 'detr')")
    pairs = [("encoder_attention_heads", "decoder_attention_heads", 8), ("encoder_ffn_dim", "decoder_ffn_dim", 2048)]
    for enc, dec, default in pairs:
        if hf.get(enc, default) != hf.get(dec, default):
            raise CheckpointError(f"{source}: {enc} {hf.get(enc, default)} != {dec} {hf.get(dec, default)}; "
                                  f"detrtool's DETR uses one value for both")
    checks = {"activation_function": ("relu",), "position_embedding_type": ("sine", "learned")}
    for key, allowed in checks.items():
        if hf.get(key, allowed[0]) not in allowed:
            raise CheckpointError(f"{source}: unsupported {key} {hf.get(key)!r} (supported: {list(allowed)})")


def resolve_backbone(hf: dict[str, Any], *, source: str) -> tuple[str, bool]:
    """(torchvision ResNet name, dilation) of a DETR config's backbone, timm's or transformers'."""
    sub = hf.get("backbone_config")
    dilation = _flag(hf, "dilation", False, source=source)
    use_timm = _flag(hf, "use_timm_backbone", True, source=source)
    if isinstance(sub, dict) and sub.get("model_type") == "resnet":
        if dilation:
            log.warning("%s: dilation is ignored with a transformers ResNet backbone (as transformers does)", source)
        return _transformers_resnet(sub, source=source), False
    if isinstance(sub, dict) and sub.get("model_type") == "timm_backbone":
        stride = sub.get("output_stride")
        if stride is not None and (type(stride) is not int or stride not in (16, 32)):
            raise CheckpointError(f"{source}: backbone_config.output_stride must be 16 (DC5) or 32, got {stride!r:.40}")
        return _timm_resnet(sub.get("backbone"), source=source), dilation or stride == 16
    if sub is not None:
        kind = sub.get("model_type") if isinstance(sub, dict) else type(sub).__name__
        raise CheckpointError(f"{source}: unsupported backbone {kind!r} (supported: ResNet-18/34/50/101, timm's "
                              f"or transformers')")
    if use_timm:
        return _timm_resnet(hf.get("backbone") or "resnet50", source=source), dilation
    return _transformers_resnet({}, source=source), False


def _timm_resnet(name: Any, *, source: str) -> str:
    """``resnet50``, ``timm/resnet50.a1_in1k`` ... -> ``resnet50``; other architectures are refused."""
    base = str(name).removeprefix("timm/").split(".")[0]
    if base not in TIMM_RESNETS:
        raise CheckpointError(f"{source}: unsupported backbone {name!r} (supported: timm {list(TIMM_RESNETS)} or "
                              f"a transformers ResNet of those depths)")
    return base


def _transformers_resnet(sub: dict[str, Any], *, source: str) -> str:
    """A transformers ``ResNetConfig`` that is exactly a torchvision ResNet-18/34/50/101 -> its name."""
    cfg = {**_RESNET_DEFAULTS, **{k: v for k, v in sub.items() if k in _RESNET_DEFAULTS}}
    _check_resnet_types(cfg, source=source)
    name = _RESNET_DEPTHS.get((cfg["layer_type"], tuple(cfg["depths"])))
    standard = (name is not None and list(cfg["hidden_sizes"]) == _WIDTHS[cfg["layer_type"]]
                and cfg["embedding_size"] == 64 and cfg["hidden_act"] == "relu"
                and not cfg["downsample_in_first_stage"] and not cfg["downsample_in_bottleneck"])
    if not standard:
        shown = {k: cfg[k] for k in ("layer_type", "depths", "hidden_sizes", "embedding_size")}
        raise CheckpointError(f"{source}: unsupported backbone: transformers ResNet {shown} is not a "
                              f"torchvision ResNet-18/34/50/101")
    return name


def _check_resnet_types(cfg: dict[str, Any], *, source: str) -> None:
    """Each ``backbone_config`` entry read has its JSON type (a ``"depths": 4`` was a ``TypeError``, a
    ``"downsample_in_bottleneck": "false"`` read as True)."""
    for key in ("downsample_in_first_stage", "downsample_in_bottleneck"):
        _flag(cfg, key, False, source=source, where="backbone_config.")
    for key in ("depths", "hidden_sizes"):
        value = cfg[key]
        if not isinstance(value, list) or not all(type(v) is int and 1 <= v <= MAX_SIZE for v in value):
            raise CheckpointError(f"{source}: backbone_config.{key} must be a list of integers 1..{MAX_SIZE}, got "
                                  f"{value!r:.40}")
    if type(cfg["embedding_size"]) is not int:
        raise CheckpointError(f"{source}: backbone_config.embedding_size must be an integer, got "
                              f"{cfg['embedding_size']!r:.40}")
    for key in ("layer_type", "hidden_act"):
        if not isinstance(cfg[key], str):
            raise CheckpointError(f"{source}: backbone_config.{key} must be a string, got {cfg[key]!r:.40}")


def _id2label(hf: dict[str, Any], *, source: str) -> dict[int, str]:
    raw = hf.get("id2label")
    if raw is None:
        return {i: f"LABEL_{i}" for i in range(_positive_int(hf, "num_labels", 2, source=source))}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and k.isdecimal() and str(int(k)) == k for k in raw):
        raise CheckpointError(f"{source}: id2label must map class ids to names (keys '0', '1', ...), got "
                              f"{raw!r:.60}")
    if bad := next((k for k, v in raw.items() if not isinstance(v, str)), None):
        raise CheckpointError(f"{source}: id2label[{bad!r}] must be a class name (a string), got {raw[bad]!r:.40}")
    labels = {int(k): printable(v) for k, v in raw.items()}  # a name carrying a terminal escape is shown as text
    if sorted(labels) != list(range(len(labels))):
        raise CheckpointError(f"{source}: id2label ids must be 0..{len(labels) - 1}, got {sorted(labels)[:8]}")
    return labels


def class_names(hf: dict[str, Any], *, source: str) -> tuple[str, ...]:
    """Names by class id from ``id2label``; () when they are transformers' placeholders ``LABEL_i``."""
    labels = _id2label(hf, source=source)
    names = tuple(labels[i] for i in range(len(labels)))
    return () if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def model_config_to_hf(config: ModelConfig, *, backbone_kind: str = "timm") -> dict[str, Any]:
    """A ``config.json`` for ``DetrForObjectDetection``, or ``DetrForSegmentation`` with its stuff ids for a
    ``masks`` model (Hub layout); :class:`ValueError` when HF DETR cannot express ``config`` (pre-norm, a
    backbone other than ResNet-18/34/50/101, DC5 without timm)."""
    _check_expressible(config, backbone_kind)
    names = list(config.class_names) or [f"LABEL_{i}" for i in range(config.num_classes)]
    segmentation = {STUFF_KEY: list(config.stuff_classes)} if config.masks else {}
    return {
        "architectures": ["DetrForSegmentation" if config.masks else "DetrForObjectDetection"], "model_type": "detr",
        "d_model": config.hidden_dim, "encoder_attention_heads": config.nheads,
        "decoder_attention_heads": config.nheads, "encoder_layers": config.enc_layers,
        "decoder_layers": config.dec_layers, "encoder_ffn_dim": config.dim_feedforward,
        "decoder_ffn_dim": config.dim_feedforward, "dropout": config.dropout, "activation_function": "relu",
        "num_queries": config.num_queries, "position_embedding_type": config.position_embedding,
        "auxiliary_loss": False, "num_channels": 3, "dilation": config.dilation,
        "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
        "use_pretrained_backbone": False, **_backbone_entries(config, backbone_kind), **segmentation,
    }


def _check_expressible(config: ModelConfig, backbone_kind: str) -> None:
    if config.pre_norm:
        raise ValueError("Hugging Face DetrForObjectDetection has no pre-norm transformer; this model has "
                         "pre_norm=True (use --to official or --to safetensors)")
    if config.backbone not in TIMM_RESNETS:
        raise ValueError(f"Hugging Face DETR needs a ResNet-18/34/50/101 backbone; this model has "
                         f"{config.backbone!r}")
    if config.position_embedding not in ("sine", "learned"):
        raise ValueError(f"Hugging Face DETR has no position embedding {config.position_embedding!r}")
    if config.dilation and backbone_kind != "timm":
        raise ValueError("a DC5 (dilation) model needs the timm backbone in Hugging Face DETR (--hf-backbone timm)")
    if len(config.class_names) not in (0, config.num_classes):
        raise ValueError(f"{len(config.class_names)} class names for {config.num_classes} classes")


def _backbone_entries(config: ModelConfig, backbone_kind: str) -> dict[str, Any]:
    if backbone_kind == "timm":
        return {"use_timm_backbone": True, "backbone": config.backbone, "backbone_config": None}
    layer_type = "basic" if config.backbone in ("resnet18", "resnet34") else "bottleneck"
    depths = next(d for (t, d), n in _RESNET_DEPTHS.items() if n == config.backbone)
    stages = ["stage1", "stage2", "stage3", "stage4"] if config.masks else ["stage4"]  # the mask head's FPN
    sub = {**_RESNET_DEFAULTS, "model_type": "resnet", "layer_type": layer_type, "depths": list(depths),
           "hidden_sizes": _WIDTHS[layer_type], "num_channels": 3, "out_features": stages}
    return {"use_timm_backbone": False, "backbone": None, "backbone_config": sub}
