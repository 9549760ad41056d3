"""State-dict checks shared by every loader (checkpoints, HF files, backbone weights)."""

from __future__ import annotations

from typing import Any

import torch


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
