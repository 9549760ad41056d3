"""Read Hugging Face DETR folders and ``.safetensors`` files; write HF folders, official files, safetensors.

``DetrForSegmentation`` (detector under ``detr.``, mask head beside it) is read as the official panoptic layout,
mask head kept, and a segmentation model (``masks``) is written as one.

Read (:func:`read_hf_checkpoint`, what ``read_checkpoint`` dispatches to for a folder or a ``.safetensors``):

- a folder with ``config.json`` and ``model.safetensors`` (or ``model.safetensors.index.json`` shards, or
  ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``);
- a ``.safetensors`` file, with its own config: the detrtool config :func:`write_safetensors` embeds in the
  file's metadata (``detrtool_config``), else the ``config.json`` beside it when there is one (an HF config, or
  the detrtool config older versions wrote there); without one, its architecture is inferred like an official
  file's. A converted file never shares a ``config.json`` that another model's conversion could replace.

Safetensors are read by the safetensors library: no pickle at all. The result is a checkpoint dict in the
official layout — ``{"model": state_dict, "config": {"model": ModelConfig dict}, "hf_backbone": kind}``
(``config`` absent when nothing describes the model; ``assumed_config`` for a segmentation config whose stuff
ids were assumed) — so ``load_checkpoint`` builds and checks it as usual.
Every file is written through :func:`detr_core.atomic.atomic_write`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detr_core.atomic import atomic_folder, atomic_write, atomic_write_bytes, atomic_write_text
from detr_core.checkpoint_state import CheckpointError, check_sizes_fit, load_failure, split_panoptic_state
from detr_core.config import ModelConfig, to_dict
from detr_core.hf.config import hf_to_model_config, model_config_to_hf, segmentation_config
from detr_core.hf.keys import (
    SEGMENTATION_PREFIX,
    hf_backbone_kind,
    hf_to_official,
    normalize_hf_keys,
    official_to_hf,
)

log = logging.getLogger(__name__)

CONFIG = "config.json"
SAFETENSORS, SHARD_INDEX, PYTORCH_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
DETRTOOL_FORMAT = "detrtool"  #: ``config.json`` ``format`` of a detrtool safetensors config
EMBEDDED_KEY = "detrtool_config"  #: safetensors metadata key of the config embedded by :func:`write_safetensors`
_HF_PREFIXES = ("model.", "class_labels_classifier.", "bbox_predictor.")


def is_hf_source(path: str | Path) -> bool:
    """True for what :func:`read_hf_checkpoint` reads: a folder, or a ``.safetensors`` file name."""
    path = Path(path)
    return path.is_dir() or path.suffix == ".safetensors"


def read_hf_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict (official layout, see the module docstring) from an HF folder or a .safetensors."""
    path = Path(path)
    if path.is_dir():
        weights = folder_weights(path)
        config = read_config(path / CONFIG)
        return assemble(read_weights(weights), config, source=str(weights), config_source=str(path / CONFIG))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    state = read_safetensors(path)
    embedded = embedded_config(path)
    if embedded is not None:
        return assemble(state, embedded, source=str(path), config_source=f"{path} (its {EMBEDDED_KEY})")
    beside = path.parent / CONFIG
    config = read_config(beside) if beside.is_file() else None
    return assemble(state, config, source=str(path), config_source=str(beside))


def embedded_config(path: Path) -> dict[str, Any] | None:
    """The detrtool config in ``path``'s safetensors metadata (:func:`write_safetensors`); None when it has none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(EMBEDDED_KEY)
    except Exception as exc:  # noqa: BLE001 - a malformed header: one line for all
        raise CheckpointError(f"{path}: not a readable safetensors file ({load_failure(exc)})") from None
    if text is None:
        return None
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        config = None
    if not isinstance(config, dict) or config.get("format") != DETRTOOL_FORMAT:
        raise CheckpointError(f"{path}: its {EMBEDDED_KEY} metadata is not a detrtool config (a JSON object with "
                              f"format {DETRTOOL_FORMAT!r})")
    return config


def folder_weights(folder: Path) -> Path:
    """The weights file of an HF model folder; one line when it has no config.json or no weights."""
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"{folder}: a folder without {CONFIG}: not a Hugging Face model folder")
    for name in (SAFETENSORS, SHARD_INDEX, PYTORCH_BIN):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: Hugging Face folder without weights (no {SAFETENSORS}, {SHARD_INDEX} or "
                          f"{PYTORCH_BIN})")


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` as a dict; one line naming the file when it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not a readable JSON file (nested too deeply)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a model config (a JSON {type(data).__name__}, not an object)")
    return data


def read_weights(path: Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors``, a shard index or ``pytorch_model.bin`` (weights-only)."""
    if path.name.endswith(".index.json"):
        return _read_shards(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same one-line error
        raise CheckpointError(f"{path}: not a readable PyTorch state dict ({load_failure(exc)})") from None
    return _tensors_only(state, path)


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file; one line naming the file when it is not one."""
    from safetensors.torch import load

    try:
        state = load(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - a malformed header or body: one line for all
        raise CheckpointError(f"{path}: not a readable safetensors file ({load_failure(exc)})") from None
    return floating_weights(state, path)


def floating_weights(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """``state`` when every tensor is floating point but BatchNorm's integer ``num_batches_tracked``;
    :class:`CheckpointError` naming the file and the key otherwise (a DETR has no integer or bool weight: such
    a tensor — e.g. a header whose ``F32`` was rewritten to ``I32`` over the same bytes — would be cast
    silently into a float parameter). fp16 / bf16 tensors are floating point and load as fp32."""
    for key, tensor in state.items():
        if not key.endswith("num_batches_tracked") and not tensor.is_floating_point():
            raise CheckpointError(f"{path}: tensor {key} is {str(tensor.dtype)[6:]}; DETR weights are floating "
                                  "point (refusing to cast it)")
    return state


def _read_shards(index: Path) -> dict[str, Tensor]:
    weight_map = read_config(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no weight_map in the shard index")
    if bad := next((k for k, v in weight_map.items() if not isinstance(v, str)), None):
        raise CheckpointError(f"{index}: weight_map[{bad!r}] must be a shard file name, got {weight_map[bad]!r:.40}")
    state: dict[str, Tensor] = {}
    found_in: dict[str, str] = {}
    for shard in sorted(set(weight_map.values())):
        path = _shard_path(index, shard)
        if not path.is_file():
            first = next(k for k, v in weight_map.items() if v == shard)
            raise CheckpointError(f"{index}: shard {shard!r} (holding {first}) is missing from {index.parent}")
        for key, tensor in read_safetensors(path).items():
            _check_shard_key(index, key, shard, weight_map, found_in)
            state[key] = tensor
    if missing := sorted(set(weight_map) - set(state)):
        raise CheckpointError(f"{index}: tensor {missing[0]} is not in shard {weight_map[missing[0]]!r}, where the "
                              f"index says it is" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return state


def _check_shard_key(index: Path, key: str, shard: str, weight_map: dict[str, str], found_in: dict[str, str]) -> None:
    """Each tensor comes from the one shard the index names for it: a tensor in two shards (the copy the index
    does not name once won, as the later file), or one the index does not list, is refused naming the shards."""
    named = weight_map.get(key)
    if named is None:
        raise CheckpointError(f"{index}: shard {shard!r} holds tensor {key}, which the index does not list")
    if key in found_in:
        raise CheckpointError(f"{index}: tensor {key} is in two shards, {found_in[key]!r} and {shard!r} (the index "
                              f"names {named!r}); refusing to pick one")
    if named != shard:
        raise CheckpointError(f"{index}: tensor {key} is in shard {shard!r} but the index names {named!r} for it")
    found_in[key] = shard


def _shard_path(index: Path, shard: str) -> Path:
    """``shard``, a file name beside ``index``; one line when it names a path (``../x``, ``/abs``, ``sub/x``) or
    is a symlink resolving outside the index's folder: a shard index may not pull weights from elsewhere on
    the disk. The one exception is the Hugging Face hub cache, whose ``snapshots/<rev>/`` files are links into
    the same repository's ``blobs/``."""
    if Path(shard).name != shard or shard in ("", ".", ".."):
        raise CheckpointError(f"{index}: shard {shard!r} is not a file name in {index.parent} (a shard index may "
                              "only name files beside it)")
    path = index.parent / shard
    if path.is_symlink():
        folder, target = index.parent.resolve(), path.resolve()
        hub_blobs = folder.parent.name == "snapshots" and target.parent == folder.parent.parent / "blobs"
        if target.parent != folder and not hub_blobs:
            raise CheckpointError(f"{index}: shard {shard!r} is a symlink to {target}, outside {index.parent} (a "
                                  "shard index may only name files beside it)")
    return path


def _tensors_only(state: Any, path: Path) -> dict[str, Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a dict of tensors, got {type(state).__name__})")
    return floating_weights(state, path)


def assemble(state: dict[str, Tensor], config: dict[str, Any] | None, *, source: str,
             config_source: str = CONFIG) -> dict[str, Any]:
    """The checkpoint dict for ``state`` (HF or official layout, read from ``source``) and its config.json
    (HF, detrtool or none, read from ``config_source``); errors name the file at fault."""
    if config is not None and config.get("format") == DETRTOOL_FORMAT:
        return {"model": state, "config": {"model": _detrtool_config(config, config_source)}}
    if config is not None and "model_type" not in config:
        raise CheckpointError(f"{config_source}: neither a Hugging Face config (no model_type) nor a detrtool one")
    model_config = hf_to_model_config(config, source=config_source) if config is not None else None
    if not is_hf_layout(state):
        ckpt: dict[str, Any] = {"model": state}
    else:
        hf_state = normalize_hf_keys(state)
        ckpt = {"model": hf_to_official(hf_state, source=source), "hf_backbone": hf_backbone_kind(hf_state)}
    if model_config is not None:
        check_sizes_fit(model_config, ckpt["model"], source=source, config_source=config_source)
        ckpt.update(_config_entries(model_config, config or {}, ckpt["model"], source=config_source))
    return ckpt


def _config_entries(model_config: ModelConfig, config: dict[str, Any], state: dict[str, Tensor], *,
                    source: str) -> dict[str, Any]:
    """``{"config": ...}``, and for a segmentation state (a mask head beside ``detr.``) ``masks=True``, its stuff
    ids and ``{"assumed_config": ...}`` when they were assumed (:func:`segmentation_config`)."""
    if not split_panoptic_state(state)[1]:
        return {"config": {"model": to_dict(model_config)}}
    model_config, assumed = segmentation_config(model_config, config, source=source)
    return {"config": {"model": to_dict(model_config)}, "assumed_config": assumed}


def is_hf_layout(state: dict[str, Tensor]) -> bool:
    """HF names (a ``DetrForSegmentation``'s detector under ``detr.``), not the official ones."""
    return any(k.removeprefix(SEGMENTATION_PREFIX).startswith(_HF_PREFIXES) for k in state)


def _detrtool_config(config: dict[str, Any], source: str) -> dict[str, Any]:
    model = config.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{source}: a detrtool config without a 'model' mapping")
    return model


def safetensors_bytes(state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """``state`` serialised by the safetensors library (contiguous copies; ``format: pt`` as transformers wants,
    and ``metadata``'s entries)."""
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in state.items()}, metadata={**(metadata or {}), "format": "pt"})


def write_hf_folder(folder: str | Path, state: dict[str, Tensor], config: ModelConfig, *,
                    backbone_kind: str = "timm") -> Path:
    """An HF model folder (``model.safetensors`` and ``config.json``) for an official-layout ``state``, both
    swapped in together (:func:`detr_core.atomic.atomic_folder`): a failure leaves no new folder, no
    partial file and an existing folder's files as they were."""
    folder = Path(folder)
    hf_config = model_config_to_hf(config, backbone_kind=backbone_kind)
    data = safetensors_bytes(official_to_hf(state, backbone_kind=backbone_kind))
    with atomic_folder(folder) as stage:
        atomic_write_bytes(stage / SAFETENSORS, data)
        atomic_write_text(stage / CONFIG, json.dumps(hf_config, indent=2) + "\n")
    return folder


def write_official(path: str | Path, state: dict[str, Tensor]) -> Path:
    """``{"model": state}``: the file the reference's ``main.py --resume`` loads."""
    payload = {"model": {k: v.detach().clone() for k, v in state.items()}}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def write_safetensors(path: str | Path, state: dict[str, Tensor], config: ModelConfig) -> Path:
    """Official-layout weights in ``path``, the detrtool config embedded in its metadata (``detrtool_config``):
    one self-contained file; no ``config.json`` is written (one beside it belongs to another model)."""
    path = check_safetensors_target(path)
    text = json.dumps({"format": DETRTOOL_FORMAT, "model": to_dict(config)}, separators=(",", ":"))
    atomic_write_bytes(path, safetensors_bytes(state, {EMBEDDED_KEY: text}))
    return path


def check_safetensors_target(path: str | Path) -> Path:
    """``path``; :class:`ValueError` when it is not a ``.safetensors`` name."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a safetensors output must end in .safetensors")
    return path
