"""The export wrapper: DETR with flat, named tensors in and out, and nothing that switches mode.

Inputs (static shapes fixed at export, or, exported with ``dynamic``, symbolic batch ``B``, height
``H`` and width ``W``: see :func:`dynamic_shapes`):

- ``images`` float32 [B, 3, H, W], ImageNet-normalised, each image in the top-left corner of the canvas;
- ``mask`` bool [B, H, W], True on padding (a live graph input, never baked in);
- ``orig_sizes`` int64 [B, 2] (h, w) of the original images (only :class:`DetrWithPostprocess`).

Outputs: ``pred_logits`` [B, Q, C+1] and ``pred_boxes`` [B, Q, 4] (cx, cy, w, h normalised to each
image's unpadded size), or, with post-processing, ``scores`` [B, Q], ``labels`` [B, Q] int64 and
``boxes`` [B, Q, 4] (x0, y0, x1, y1 in original pixels).
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor, nn

from detr_core.postprocess import postprocess_tensors

RAW_INPUTS: tuple[str, ...] = ("images", "mask")
RAW_OUTPUTS: tuple[str, ...] = ("pred_logits", "pred_boxes")
POST_INPUTS: tuple[str, ...] = ("images", "mask", "orig_sizes")
POST_OUTPUTS: tuple[str, ...] = ("scores", "labels", "boxes")


class DetrRaw(nn.Module):
    """``(images, mask) -> (pred_logits, pred_boxes)`` of the last decoder layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        logits, boxes = self.model.forward_raw(images, mask)
        return logits[-1], boxes[-1]


class DetrWithPostprocess(nn.Module):
    """``(images, mask, orig_sizes) -> (scores, labels, boxes)``: every query, best real class each."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, mask: Tensor, orig_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        logits, boxes = self.model.forward_raw(images, mask)
        return postprocess_tensors(logits[-1], boxes[-1], orig_sizes)


def wrap(model: nn.Module, *, with_postprocess: bool = False) -> nn.Module:
    """The wrapper for ``model`` (a ``DETR``) in eval mode."""
    wrapper = DetrWithPostprocess(model) if with_postprocess else DetrRaw(model)
    return wrapper.eval()


def io_names(*, with_postprocess: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the wrapper."""
    return (POST_INPUTS, POST_OUTPUTS) if with_postprocess else (RAW_INPUTS, RAW_OUTPUTS)


#: Which dimension of each input is the batch, the height and the width.
_AXES: dict[str, dict[int, str]] = {"images": {0: "batch", 2: "height", 3: "width"},
                                    "mask": {0: "batch", 1: "height", 2: "width"}, "orig_sizes": {0: "batch"}}


def dynamic_shapes(input_names: tuple[str, ...], limits: dict[str, list[int]]) -> dict[str, dict[int, Any]]:
    """``torch.export`` ``dynamic_shapes``: one ``Dim`` per name in ``limits`` (batch, height, width; each
    ``[min, max]``), shared by every input that has it, so images, mask and orig_sizes must agree."""
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi) in limits.items()}
    return {name: {axis: dims[dim] for axis, dim in _AXES[name].items()} for name in input_names}


def dynamic_axes(input_names: tuple[str, ...], output_names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """The legacy ONNX exporter's ``dynamic_axes``: named batch/height/width inputs, batch of outputs."""
    axes = {name: dict(_AXES[name]) for name in input_names}
    axes.update({name: {0: "batch"} for name in output_names})
    return axes
