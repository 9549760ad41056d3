"""What every checkpoint reader shares, in a leaf (no reader imported): the error, the state-dict checks
(dtype classes, sizes against a config, the panoptic split) and COCO panoptic's stuff assumption. The
official reader and dispatcher (:mod:`detr_core.checkpoint`) and the Hugging Face readers
(:mod:`detr_core.hf`) both build on it, so neither imports the other to raise the same error."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from detr_core.config import ModelConfig
from detr_core.errors import first_line

log = logging.getLogger(__name__)

#: The official panoptic checkpoints' class count and their stuff ids: every id >= 92 (COCO panoptic's things are
#: 1..90 and its stuff 92..200; the ids above 200 are unused).
COCO_PANOPTIC_CLASSES = 250
COCO_PANOPTIC_STUFF = tuple(range(92, COCO_PANOPTIC_CLASSES + 1))
#: State-dict prefixes of the panoptic mask head (beside ``detr.``, the detector).
MASK_HEAD_PREFIXES = ("bbox_attention.", "mask_head.")


class CheckpointError(ValueError):
    """A file that is not a usable DETR checkpoint; the message names the file and what is wrong."""


def dtype_class(tensor: torch.Tensor) -> str:
    """``"floating"`` (float or complex), ``"integer"`` or ``"bool"``: what a value in the tensor means."""
    if tensor.dtype == torch.bool:
        return "bool"
    return "floating" if tensor.is_floating_point() or tensor.is_complex() else "integer"


def dtype_mismatch(own: dict[str, torch.Tensor], state: dict[str, Any]) -> str | None:
    """The first key of ``state`` that is not a tensor, or whose dtype class differs from the model's
    tensor (integer or bool into a floating parameter, floating into an integer buffer such as
    ``num_batches_tracked``), described in one line; None when all fit. ``load_state_dict`` would cast such
    a value silently (a ``F32`` -> ``I32`` safetensors header turned every box into ``[0, 32, 0, 64]``).
    Floating to floating (fp16 / bf16 weights into fp32 parameters) is allowed: a change of precision,
    not of meaning. Keys the model lacks are left to the caller's key check."""
    for key, theirs in state.items():
        if key not in own:
            continue
        if not isinstance(theirs, torch.Tensor):
            return f"{key} is a {type(theirs).__name__}, not a tensor"
        if dtype_class(theirs) != dtype_class(own[key]):
            return (f"tensor {key} is {str(theirs.dtype)[6:]} where the model holds {str(own[key].dtype)[6:]} "
                    f"({dtype_class(theirs)} values into a {dtype_class(own[key])} tensor); refusing to cast it")
    return None


def load_failure(exc: BaseException) -> str:
    """One plain line for why ``torch.load(weights_only=True)`` failed: for a refused pickle, the object
    it refused (``Unsupported global: GLOBAL posix.system``: code that would have run); else the first line."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        reason = first_line(ValueError(detail.split(" was not an allowed global")[0]))
        return f"refused by the weights-only unpickler: {reason.rstrip('.')}"
    line = first_line(exc)
    return "neither a PyTorch zip archive nor a pickle" if line.isdigit() or line == "EOFError" else line


def count_indexed(state_dict: dict[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def assume_coco_panoptic_stuff(source: str | Path, kind: str) -> dict[str, str]:
    """Log that a 250-class panoptic model without stuff ids (``kind``: an official checkpoint, an HF
    ``DetrForSegmentation``) gets :data:`COCO_PANOPTIC_STUFF`; its ``assumed_config`` entry."""
    log.info("%s: %s with 250 classes and no stuff ids: ids >= %d are stuff, as in COCO panoptic", source, kind,
             COCO_PANOPTIC_STUFF[0])
    return {"stuff_classes": f"{COCO_PANOPTIC_STUFF[0]}..{COCO_PANOPTIC_STUFF[-1]}"}


def split_panoptic_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(detector state, mask-head state). The panoptic layout keeps the detector under ``detr.`` and the mask
    head under ``bbox_attention.`` / ``mask_head.``; a detector's state has no mask head (``{}``)."""
    if not any(k.startswith("detr.") for k in state):
        return dict(state), {}
    detector = {k[len("detr."):]: v for k, v in state.items() if k.startswith("detr.")}
    return detector, {k: v for k, v in state.items() if not k.startswith("detr.")}


#: ModelConfig size -> (what the weights show, official detector key, axis, rows beyond the size)
_SIZE_TENSORS = {"num_queries": ("query_embed.weight rows", "query_embed.weight", 0, 0),
                 "hidden_dim": ("query_embed.weight columns", "query_embed.weight", 1, 0),
                 "num_classes": ("class_embed.weight rows - 1 (no-object)", "class_embed.weight", 0, 1),
                 "dim_feedforward": ("encoder layer 0's linear1.weight rows",
                                     "transformer.encoder.layers.0.linear1.weight", 0, 0)}


def _state_sizes(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, int]]:
    """{ModelConfig field: (what, size)} read off an official-layout ``state`` (detector or panoptic)."""
    detector, _ = split_panoptic_state(state)
    sizes = {}
    for field, (what, key, axis, extra) in _SIZE_TENSORS.items():
        tensor = detector.get(key)
        if isinstance(tensor, torch.Tensor) and tensor.dim() > axis:
            sizes[field] = (what, int(tensor.shape[axis]) - extra)
    for field, stack in (("enc_layers", "encoder"), ("dec_layers", "decoder")):
        layers = count_indexed(detector, f"transformer.{stack}.layers.")
        sizes.update({field: (f"{stack} layers", layers)} if layers else {})
    return sizes


def check_sizes_fit(config: ModelConfig, state: dict[str, torch.Tensor], *, source: str, config_source: str) -> None:
    """One line naming ``config_source`` when a size the config gives (queries, width, classes, feed-forward,
    layers) is not the weights' — checked before a model of the config's size is built (a ``num_queries`` of
    10**9 allocated 512 GB)."""
    for field, (what, size) in _state_sizes(state).items():
        if getattr(config, field) != size:
            raise CheckpointError(f"{config_source}: {field} {getattr(config, field)} disagrees with the weights "
                                  f"in {source} ({what}: {size})")
