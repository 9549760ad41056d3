"""State-dict key mapping between Hugging Face ``DetrForObjectDetection`` / ``DetrForSegmentation`` and the
official DETR layout.

HF keys are read in any of the layouts transformers has used (4.x and the Hub files: ``backbone.conv_encoder``,
``out_proj``, ``fc1``; 5.x in memory: ``backbone.model``, ``o_proj``, ``mlp.fc1``; learned position
embeddings under ``model.backbone.`` in 4.x) and written in the layout ``save_pretrained`` writes (transformers
5.24, which is also the Hub's). HF splits each attention's input projection into ``q_proj``/``k_proj``/
``v_proj``; the official layout joins them into ``in_proj_weight``/``in_proj_bias`` (q, k, v rows in that
order). Every mapping is a pure rename, split or concatenation: tensors come out bit-identical.

The backbone is either timm's ResNet (``backbone_kind="timm"``: the same names as torchvision's, under
``model.backbone.conv_encoder.model.``) or the transformers ``ResNetBackbone`` (``"transformers"``: embedder /
stages / layers, renamed to torchvision's ``conv1`` / ``layer{s+1}.{b}.conv{c+1}`` ...).

``DetrForSegmentation`` keeps its detector under ``detr.`` (mapped as above) and its mask head under
``bbox_attention.`` / ``mask_head.``. The files transformers writes (the Hub's, and ``save_pretrained`` in 5.24)
use the official mask-head names (``q_linear``, ``lay1`` .. ``lay5``, ``gn1`` .. ``gn5``, ``adapter1`` ..
``adapter3``, ``out_lay``): kept as they are. transformers 5's in-memory names (``q_proj``, ``conv1.conv``,
``fpn_stages.{i}.fpn_adapter`` / ``.refine.conv`` / ``.refine.norm``, ``output_conv``) are renamed to them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from detr_core.checkpoint_state import CheckpointError, split_panoptic_state

HF_BACKBONE = "model.backbone.conv_encoder.model."
OFFICIAL_BACKBONE = "backbone.0.body."
BACKBONE_KINDS = ("timm", "transformers")

#: Older / in-memory HF names -> the names of the files transformers writes (applied to every HF key read).
_LEGACY = [
    (re.compile(r"^model\.backbone\.model\."), HF_BACKBONE),
    (re.compile(r"^model\.backbone\.position_embedding\."), "model.position_embedding."),
    (re.compile(r"\.o_proj\."), ".out_proj."),
    (re.compile(r"\.mlp\.(fc[12])\."), r".\1."),
]

#: transformers 5's in-memory mask-head names -> the file (= official) names (its conversion_mapping, reversed).
_MASK_HEAD_LEGACY = [
    (re.compile(r"^bbox_attention\.([qk])_proj\."), r"bbox_attention.\1_linear."),
    (re.compile(r"^mask_head\.conv([12])\.conv\."), r"mask_head.lay\1."),
    (re.compile(r"^mask_head\.conv([12])\.norm\."), r"mask_head.gn\1."),
    (re.compile(r"^mask_head\.fpn_stages\.(\d+)\.fpn_adapter\."), lambda m: f"mask_head.adapter{int(m[1]) + 1}."),
    (re.compile(r"^mask_head\.fpn_stages\.(\d+)\.refine\.conv\."), lambda m: f"mask_head.lay{int(m[1]) + 3}."),
    (re.compile(r"^mask_head\.fpn_stages\.(\d+)\.refine\.norm\."), lambda m: f"mask_head.gn{int(m[1]) + 3}."),
    (re.compile(r"^mask_head\.output_conv\."), "mask_head.out_lay."),
]
#: Every mask-head name of the official panoptic layout (and of DetrForSegmentation's files).
_MASK_HEAD_KEY = re.compile(r"^(bbox_attention\.[qk]_linear|mask_head\.(lay[1-5]|gn[1-5]|adapter[1-3]|out_lay))"
                            r"\.(weight|bias)$")
SEGMENTATION_PREFIX = "detr."  #: the detector's prefix in a panoptic / DetrForSegmentation state dict

#: HF prefix -> official prefix, outside the transformer layers and the backbone body.
_TOP = {
    "model.input_projection.": "input_proj.",
    "model.query_position_embeddings.": "query_embed.",
    "model.decoder.layernorm.": "transformer.decoder.norm.",
    "class_labels_classifier.": "class_embed.",
    "bbox_predictor.": "bbox_embed.",
    "model.position_embedding.row_embeddings.": "backbone.1.row_embed.",
    "model.position_embedding.column_embeddings.": "backbone.1.col_embed.",
}
#: Inside ``layers.{i}.``: HF prefix -> official prefix, per stack.
_LAYER = {
    "encoder": {"self_attn.out_proj.": "self_attn.out_proj.", "self_attn_layer_norm.": "norm1.",
                "fc1.": "linear1.", "fc2.": "linear2.", "final_layer_norm.": "norm2."},
    "decoder": {"self_attn.out_proj.": "self_attn.out_proj.", "self_attn_layer_norm.": "norm1.",
                "encoder_attn.out_proj.": "multihead_attn.out_proj.", "encoder_attn_layer_norm.": "norm2.",
                "fc1.": "linear1.", "fc2.": "linear2.", "final_layer_norm.": "norm3."},
}
_ATTENTION = {"self_attn": "self_attn", "encoder_attn": "multihead_attn"}
_HF_LAYER = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_OFFICIAL_LAYER = re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_HF_QKV = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\.(weight|bias)$")
_IN_PROJ = re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|multihead_attn)\.in_proj_(weight|bias)$")

_HF_RESNET = [
    (re.compile(r"^embedder\.embedder\.convolution\.(.+)$"), lambda m: f"conv1.{m[1]}"),
    (re.compile(r"^embedder\.embedder\.normalization\.(.+)$"), lambda m: f"bn1.{m[1]}"),
    (re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.(.+)$"),
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0.{m[3]}"),
    (re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.(.+)$"),
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1.{m[3]}"),
    (re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.(.+)$"),
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}.{m[4]}"),
    (re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.(.+)$"),
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.{m[4]}"),
]
_TORCHVISION = [
    (re.compile(r"^conv1\.(.+)$"), lambda m: f"embedder.embedder.convolution.{m[1]}"),
    (re.compile(r"^bn1\.(.+)$"), lambda m: f"embedder.embedder.normalization.{m[1]}"),
    (re.compile(r"^layer(\d+)\.(\d+)\.downsample\.0\.(.+)$"),
     lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.convolution.{m[3]}"),
    (re.compile(r"^layer(\d+)\.(\d+)\.downsample\.1\.(.+)$"),
     lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.normalization.{m[3]}"),
    (re.compile(r"^layer(\d+)\.(\d+)\.conv(\d+)\.(.+)$"),
     lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.convolution.{m[4]}"),
    (re.compile(r"^layer(\d+)\.(\d+)\.bn(\d+)\.(.+)$"),
     lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.normalization.{m[4]}"),
]


def normalize_hf_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF keys in the file layout: legacy / in-memory names renamed (a ``DetrForSegmentation``'s detector
    under ``detr.`` and its mask head too), ``num_batches_tracked`` dropped."""
    return {_file_name(k): v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _file_name(key: str) -> str:
    prefix = SEGMENTATION_PREFIX if key.startswith(SEGMENTATION_PREFIX) else ""
    key = key[len(prefix):]
    for pattern, replacement in _LEGACY + _MASK_HEAD_LEGACY:
        key = pattern.sub(replacement, key)
    return prefix + key


def is_segmentation(state: dict[str, Tensor]) -> bool:
    """True for the panoptic layout (HF ``DetrForSegmentation`` or official): the detector under ``detr.``."""
    return any(k.startswith(SEGMENTATION_PREFIX) for k in state)


def hf_backbone_kind(state: dict[str, Tensor]) -> str:
    """``"transformers"`` when the (normalised) HF state dict holds a transformers ResNet, else ``"timm"``."""
    marker = HF_BACKBONE + "embedder."
    return "transformers" if any(k.removeprefix(SEGMENTATION_PREFIX).startswith(marker) for k in state) else "timm"


def hf_to_official(state: dict[str, Tensor], *, source: str) -> dict[str, Tensor]:
    """A (normalised) HF state dict in the official layout: ``DetrForObjectDetection`` -> a DETR's,
    ``DetrForSegmentation`` -> the panoptic one (detector under ``detr.``, mask head under its own names).

    Raises :class:`CheckpointError` naming ``source`` and the first keys that have no official name."""
    detector_map = partial(_hf_detector_to_official, source=source)
    return _segmentation(state, detector_map, source=source) if is_segmentation(state) else detector_map(state)


def _segmentation(state: dict[str, Tensor], detector_map: Callable[[dict[str, Tensor]], dict[str, Tensor]], *,
                  source: str) -> dict[str, Tensor]:
    """A panoptic state dict with its detector (under ``detr.``) renamed by ``detector_map``; its mask head
    keeps its names, which HF's files and the official layout share (:func:`_mask_head` checks them)."""
    detector, head = split_panoptic_state(state)
    renamed = detector_map(detector)
    return {**{SEGMENTATION_PREFIX + k: v for k, v in renamed.items()}, **_mask_head(head, source=source)}


def _mask_head(head: dict[str, Tensor], *, source: str) -> dict[str, Tensor]:
    """``head`` (file names), or :class:`CheckpointError` naming ``source`` and the keys that are no
    mask-head tensor."""
    unknown = [k for k in head if not _MASK_HEAD_KEY.match(k)]
    if unknown:
        raise CheckpointError(f"{source}: not a DETR segmentation state dict, unexpected keys {_first(unknown)}")
    return dict(head)


def _hf_detector_to_official(state: dict[str, Tensor], *, source: str) -> dict[str, Tensor]:
    kind = hf_backbone_kind(state)
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if _HF_QKV.match(key):
            continue
        name = _hf_name_to_official(key, kind)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        raise CheckpointError(f"{source}: not a DETR state dict, unexpected keys {_first(unknown)}")
    out.update(_join_qkv(state, source=source))
    return out


def official_to_hf(state: dict[str, Tensor], *, backbone_kind: str = "timm") -> dict[str, Tensor]:
    """An official-layout state dict in the layout transformers writes (``in_proj`` split into q/k/v); a
    panoptic one as ``DetrForSegmentation`` writes it (detector under ``detr.``, mask head names kept)."""
    if backbone_kind not in BACKBONE_KINDS:
        raise ValueError(f"unknown backbone kind {backbone_kind!r}; choose one of {BACKBONE_KINDS}")
    detector_map = partial(_official_detector_to_hf, backbone_kind=backbone_kind)
    return _segmentation(state, detector_map, source="state dict") if is_segmentation(state) else detector_map(state)


def _official_detector_to_hf(state: dict[str, Tensor], backbone_kind: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _IN_PROJ.match(key)
        if match:
            out.update(_split_in_proj(match, value))
            continue
        name = _official_name_to_hf(key, backbone_kind)
        if name is None:
            raise CheckpointError(f"{key}: no Hugging Face DETR name for this official key")
        out[name] = value
    return out


def _hf_name_to_official(key: str, kind: str) -> str | None:
    if key.startswith(HF_BACKBONE):
        inner = key[len(HF_BACKBONE):]
        inner = _apply(_HF_RESNET, inner) if kind == "transformers" else inner
        return None if inner is None else OFFICIAL_BACKBONE + inner
    match = _HF_LAYER.match(key)
    if match:
        stack, index, rest = match.groups()
        inner = _rename_prefix(rest, _LAYER[stack])
        return None if inner is None else f"transformer.{stack}.layers.{index}.{inner}"
    return _rename_prefix(key, _TOP)


def _official_name_to_hf(key: str, kind: str) -> str | None:
    if key.startswith(OFFICIAL_BACKBONE):
        inner = key[len(OFFICIAL_BACKBONE):]
        inner = _apply(_TORCHVISION, inner) if kind == "transformers" else inner
        return None if inner is None else HF_BACKBONE + inner
    match = _OFFICIAL_LAYER.match(key)
    if match:
        stack, index, rest = match.groups()
        inner = _rename_prefix(rest, {v: k for k, v in _LAYER[stack].items()})
        return None if inner is None else f"model.{stack}.layers.{index}.{inner}"
    return _rename_prefix(key, {v: k for k, v in _TOP.items()})


def _rename_prefix(key: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _apply(rules: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]], key: str) -> str | None:
    for pattern, rename in rules:
        match = pattern.match(key)
        if match:
            return rename(match)
    return None


def _join_qkv(state: dict[str, Tensor], *, source: str) -> dict[str, Tensor]:
    """q/k/v projections -> ``in_proj_weight`` / ``in_proj_bias`` (concatenated along dim 0)."""
    groups: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _HF_QKV.match(key)
        if match:
            stack, index, attention, which, kind = match.groups()
            name = f"transformer.{stack}.layers.{index}.{_ATTENTION[attention]}.in_proj_{kind}"
            groups.setdefault(name, {})[which] = value
    out = {}
    for name, parts in groups.items():
        missing = [f"{p}_proj" for p in "qkv" if p not in parts]
        if missing or len({tuple(t.shape) for t in parts.values()}) != 1:
            raise CheckpointError(f"{source}: {name} needs q/k/v projections of one shape; "
                                  f"missing {missing}, shapes {[list(t.shape) for t in parts.values()]}")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _split_in_proj(match: re.Match[str], value: Tensor) -> dict[str, Tensor]:
    stack, index, attention, kind = match.groups()
    hf_attention = {v: k for k, v in _ATTENTION.items()}[attention]
    prefix = f"model.{stack}.layers.{index}.{hf_attention}"
    return {f"{prefix}.{p}_proj.{kind}": t.clone() for p, t in zip("qkv", value.chunk(3, dim=0), strict=True)}


def _first(keys: list[str], count: int = 5) -> str:
    return f"{keys[:count]}{' ...' if len(keys) > count else ''}"
