"""Checkpoints: load official facebookresearch/detr files and detrtool's own, save atomically.

An official checkpoint is ``{"model": state_dict}``; its architecture is inferred from the state dict.
A detrtool checkpoint also carries ``config`` (``{"model": ModelConfig as dict, ...}``) and training
state. Loading never unpickles arbitrary objects (``weights_only=True``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detr_core.atomic import atomic_write
from detr_core.checkpoint_state import (  # noqa: F401 - the leaf's names, re-exported for callers of this module
    COCO_PANOPTIC_CLASSES,
    COCO_PANOPTIC_STUFF,
    MASK_HEAD_PREFIXES,
    CheckpointError,
    assume_coco_panoptic_stuff,
    check_sizes_fit,
    count_indexed,
    dtype_mismatch,
    load_failure,
    split_panoptic_state,
)
from detr_core.config import ModelConfig
from detr_core.registry import build_model

log = logging.getLogger(__name__)

_RESNET_BY_STAGE3 = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101"}
_BUILD_KEYS = ("train_backbone", "backbone_weights", "attention_impl", "freeze_detr")
_FINE_TUNED_HEADS = ("class_embed.", "query_embed.")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint dict with ``weights_only=True``; one clear error for anything else. A folder (Hugging
    Face DETR) or a ``.safetensors`` file is read by :func:`detr_core.hf.read_hf_checkpoint`."""
    path = Path(path)
    from detr_core.hf import is_hf_source, read_hf_checkpoint

    if is_hf_source(path):
        return read_hf_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same one-line error
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({load_failure(exc)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not a DETR checkpoint (expected a dict with a 'model' state dict)")
    return ckpt


def infer_config(state_dict: dict[str, torch.Tensor], *, source: str = "state dict") -> ModelConfig:
    """The ``ModelConfig`` an official state dict implies (``nheads`` and ``dilation`` cannot be seen)."""
    required = ("input_proj.weight", "query_embed.weight", "class_embed.weight",
                "transformer.encoder.layers.0.linear1.weight", "backbone.0.body.conv1.weight")
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source}: not a DETR state dict, missing keys {missing}")
    bottleneck = "backbone.0.body.layer1.0.conv3.weight" in state_dict
    stage3 = count_indexed(state_dict, "backbone.0.body.layer3.")
    backbone = _RESNET_BY_STAGE3.get((bottleneck, stage3))
    if backbone is None:
        raise CheckpointError(f"{source}: unrecognised backbone ({'bottleneck' if bottleneck else 'basic'} "
                              f"blocks, {stage3} blocks in layer3)")
    return ModelConfig(
        backbone=backbone,
        hidden_dim=int(state_dict["input_proj.weight"].shape[0]),
        dim_feedforward=int(state_dict["transformer.encoder.layers.0.linear1.weight"].shape[0]),
        enc_layers=count_indexed(state_dict, "transformer.encoder.layers."),
        dec_layers=count_indexed(state_dict, "transformer.decoder.layers."),
        num_queries=int(state_dict["query_embed.weight"].shape[0]),
        num_classes=int(state_dict["class_embed.weight"].shape[0]) - 1,
        pre_norm="transformer.encoder.norm.weight" in state_dict,
        position_embedding="learned" if "backbone.1.row_embed.weight" in state_dict else "sine",
    )


def load_checkpoint(path: str | Path, **overrides: Any) -> nn.Module:
    """Load a detrtool or official checkpoint into a ``DETR`` (or, for a panoptic checkpoint or with
    ``masks=True``, a ``DETRsegm``; a detector's weights then start its fresh mask head) in eval mode.

    ``overrides`` change the config (e.g. ``nheads=8``, ``dilation=True`` for official files, which
    cannot carry them; ``num_classes=N`` / ``num_queries=N`` drop the class head / queries for
    fine-tuning), or are builder options (``train_backbone``, ``attention_impl``). An official checkpoint
    loaded without ``nheads`` logs one WARNING (the default 8 is assumed) and the model records it in
    ``model.assumed_config`` (``{"nheads": 8}``; empty when nothing was assumed), which export metadata keeps.
    """
    return model_from_checkpoint(read_checkpoint(path), path, **overrides)


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path, **overrides: Any) -> nn.Module:
    """:func:`load_checkpoint` of a checkpoint dict already read from ``path`` (:func:`read_checkpoint`), for
    callers that also read its stored config: the file is read, and its reader's log lines said, once."""
    state, head = split_panoptic_state(ckpt["model"])
    stored = checked_stored_config(ckpt, path)
    config = stored or infer_config(state, source=str(path)).replace(masks=bool(head))
    read = ckpt.get("assumed_config")  # what the HF reader assumed (a segmentation config's stuff ids)
    assumed = {**(read if isinstance(read, dict) else {}), **_assumed_heads(path, stored, config, overrides)}
    if stored is None and head and config.num_classes == COCO_PANOPTIC_CLASSES and "stuff_classes" not in overrides:
        config = config.replace(stuff_classes=COCO_PANOPTIC_STUFF)
        assumed.update(assume_coco_panoptic_stuff(path, "official panoptic checkpoint"))
    build_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in _BUILD_KEYS}
    wanted = config.replace(**overrides)
    check_heads(wanted, source=str(path))
    state = _drop_resized_heads(state, config, wanted, path)
    try:
        model = build_model(wanted, **build_kwargs)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    state = with_mask_head(state, head, masks=wanted.masks, path=path)
    load_state_dict_checked(model, state, source=str(path), fresh_mask_head=wanted.masks and not head)
    model.assumed_config = assumed
    return model.eval()


def with_mask_head(state: dict[str, torch.Tensor], head: dict[str, torch.Tensor], *, masks: bool,
                    path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict for the model being built: panoptic layout when ``masks`` (a detector's weights under
    ``detr.``, the mask head fresh), else the detector alone (a panoptic file's mask head dropped)."""
    if masks:
        if not head:
            log.info("%s: a detector checkpoint: the mask head starts from a fresh initialisation", path)
        return {**{f"detr.{k}": v for k, v in state.items()}, **head}
    if head:
        log.info("%s: panoptic checkpoint loaded as a detector: %d mask-head tensors dropped", path, len(head))
    return state


def _assumed_heads(path: str | Path, stored: ModelConfig | None, config: ModelConfig,
                   overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"nheads": N}`` and one WARNING when an official checkpoint's nheads is assumed; a WARNING
    when an override contradicts a detrtool checkpoint's recorded nheads."""
    given = overrides.get("nheads")
    if stored is not None:
        if given is not None and given != stored.nheads:
            log.warning("%s: nheads %d overrides the %d the checkpoint records", path, given, stored.nheads)
        return {}
    if given is not None:
        return {}
    log.warning("%s: official checkpoint does not record nheads; assuming %d — pass --nheads if it was "
                "trained with another value", path, config.nheads)
    return {"nheads": config.nheads}


def check_heads(config: ModelConfig, *, source: str) -> None:
    """:class:`CheckpointError` unless ``nheads`` is positive and divides ``hidden_dim``."""
    if config.nheads < 1 or config.hidden_dim % config.nheads:
        raise CheckpointError(f"{source}: nheads {config.nheads} does not divide hidden_dim {config.hidden_dim}; "
                              f"--nheads must be a divisor of {config.hidden_dim}")


def checked_stored_config(ckpt: dict[str, Any], path: str | Path) -> ModelConfig | None:
    """The model config a detrtool checkpoint dict stores (None for an official one), refused with one line
    when unreadable or when a size it gives is not its weights' (:func:`check_sizes_fit`)."""
    stored = _stored_config(ckpt, path)
    if stored is not None:
        check_sizes_fit(stored, ckpt["model"], source=str(path), config_source=f"{path} (its stored model config)")
    return stored


def _stored_config(ckpt: dict[str, Any], path: str | Path) -> ModelConfig | None:
    config = ckpt.get("config")
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        try:
            return ModelConfig.from_dict(config["model"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable model config in the checkpoint ({exc})") from None
    return None


def _drop_resized_heads(state: dict[str, torch.Tensor], stored: ModelConfig, wanted: ModelConfig,
                        path: str | Path) -> dict[str, torch.Tensor]:
    """Fine-tuning: another num_classes drops the class head, another num_queries the query embedding."""
    dropped = []
    if wanted.num_classes != stored.num_classes:
        dropped += ["class_embed.weight", "class_embed.bias"]
    if wanted.num_queries != stored.num_queries:
        dropped += ["query_embed.weight"]
    if dropped:
        log.info("%s: num_classes %d -> %d, num_queries %d -> %d: dropping %s (trained anew)", path,
                 stored.num_classes, wanted.num_classes, stored.num_queries, wanted.num_queries, dropped)
    return {k: v for k, v in state.items() if k not in dropped}


def check_dtypes(own: dict[str, torch.Tensor], state: dict[str, Any], *, source: str) -> None:
    """:class:`CheckpointError` naming ``source`` and the key when a value is not a tensor or of another
    dtype class than the model's (:func:`detr_core.checkpoint_state.dtype_mismatch`)."""
    problem = dtype_mismatch(own, state)
    if problem:
        raise CheckpointError(f"{source}: {problem}")


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], *, source: str,
                            fresh_mask_head: bool = False) -> None:
    """Strict load that names the first bad keys; heads dropped for fine-tuning (and, with
    ``fresh_mask_head``, a panoptic model's mask head) may be missing; every tensor of the dtype class of
    the model's (:func:`check_dtypes`)."""
    own = model.state_dict()
    check_dtypes(own, state, source=source)
    optional = _FINE_TUNED_HEADS + (MASK_HEAD_PREFIXES if fresh_mask_head else ())
    allowed_missing = {k for k in own if k.removeprefix("detr.").startswith(optional) and k not in state}
    missing = [k for k in own if k not in state and k not in allowed_missing]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if mismatched:
        problems.append(f"shape mismatch {mismatched[:3]}{' ...' if len(mismatched) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=not allowed_missing)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (temp file, fsync, rename): a kill at any moment leaves either the
    old checkpoint or the new one, never a torn one."""
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def model_payload(model: nn.Module, config: ModelConfig, **extra: Any) -> dict[str, Any]:
    """The dict a detrtool checkpoint holds: ``model`` state dict, ``config`` and any ``extra`` state."""
    from detr_core.config import to_dict

    return {"model": model.state_dict(), "config": {"model": to_dict(config)}, **extra}
