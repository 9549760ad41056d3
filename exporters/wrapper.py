"""The export wrapper: DETR with flat, named tensors in and out, and nothing that switches mode.

Inputs (static shapes fixed at export, or, exported with ``dynamic``, symbolic batch ``B``, height
``H`` and width ``W``: see :func:`dynamic_shapes`):

- ``images`` float32 [B, 3, H, W], ImageNet-normalised, each image in the top-left corner of the canvas;
- ``mask`` bool [B, H, W], True on padding (a live graph input, never baked in);
- ``orig_sizes`` int64 [B, 2] (h, w) of the original images (only :class:`DetrWithPostprocess`).

Outputs: ``pred_logits`` [B, Q, C+1] and ``pred_boxes`` [B, Q, 4] (cx, cy, w, h normalised to each
image's unpadded size), or, with post-processing, ``scores`` [B, Q], ``labels`` [B, Q] int64 and
``boxes`` [B, Q, 4] (x0, y0, x1, y1 in original pixels).

A segmentation model (``DETRsegm``, ``masks=True``) adds one output: raw, ``pred_masks`` [B, Q, H/s, W/s]
mask logits at the model's ``mask_stride`` s over the whole padded canvas; with post-processing,
``mask_probs`` [B, Q, H/s, W/s] = sigmoid(pred_masks), still at stride s of the canvas: the images of a
batch have different original sizes, so cropping each to its own size and resizing it (PostProcessSegm's
last steps: threshold 0.5, crop, nearest to the original size) is left to the runtime's caller, where the
shapes can differ per image. The masks' h, w follow the input's H, W (dynamic exports too).
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
#: The extra output of a segmentation model, raw and with post-processing.
MASK_OUTPUT, MASK_POST_OUTPUT = "pred_masks", "mask_probs"


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


class DetrSegmRaw(nn.Module):
    """``(images, mask) -> (pred_logits, pred_boxes, pred_masks [B, Q, H/s, W/s] logits)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        logits, boxes, masks = self.model.forward_raw(images, mask)
        return logits[-1], boxes[-1], masks


class DetrSegmWithPostprocess(nn.Module):
    """``(images, mask, orig_sizes) -> (scores, labels, boxes, mask_probs [B, Q, H/s, W/s] in [0, 1])``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, mask: Tensor, orig_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        logits, boxes, masks = self.model.forward_raw(images, mask)
        scores, labels, pixel_boxes = postprocess_tensors(logits[-1], boxes[-1], orig_sizes)
        return scores, labels, pixel_boxes, masks.sigmoid()


def has_masks(model: nn.Module) -> bool:
    """Whether ``model`` is a segmentation model (a ``DETRsegm``: a mask head on the detector)."""
    return hasattr(model, "mask_head") and hasattr(model, "mask_stride")


def wrap(model: nn.Module, *, with_postprocess: bool = False) -> nn.Module:
    """The wrapper for ``model`` (a ``DETR`` or a ``DETRsegm``) in eval mode."""
    if has_masks(model):
        return (DetrSegmWithPostprocess(model) if with_postprocess else DetrSegmRaw(model)).eval()
    wrapper = DetrWithPostprocess(model) if with_postprocess else DetrRaw(model)
    return wrapper.eval()


def io_names(*, with_postprocess: bool, masks: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the wrapper (``masks``: of a segmentation model)."""
    inputs, outputs = (POST_INPUTS, POST_OUTPUTS) if with_postprocess else (RAW_INPUTS, RAW_OUTPUTS)
    if masks:
        outputs += (MASK_POST_OUTPUT if with_postprocess else MASK_OUTPUT,)
    return inputs, outputs


#: Which dimension of each input is the batch, the height and the width.
_AXES: dict[str, dict[int, str]] = {"images": {0: "batch", 2: "height", 3: "width"},
                                    "mask": {0: "batch", 1: "height", 2: "width"}, "orig_sizes": {0: "batch"}}


def dynamic_shapes(input_names: tuple[str, ...], limits: dict[str, list[int]]) -> dict[str, dict[int, Any]]:
    """``torch.export`` ``dynamic_shapes``: one ``Dim`` per name in ``limits`` (batch, height, width; each
    ``[min, max]``), shared by every input that has it, so images, mask and orig_sizes must agree."""
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi) in limits.items()}
    return {name: {axis: dims[dim] for axis, dim in _AXES[name].items()} for name in input_names}


#: The symbolic axes of the mask outputs: their h, w follow the input's H, W (divided by the stride).
_MASK_AXES = {0: "batch", 2: "mask_height", 3: "mask_width"}


def dynamic_axes(input_names: tuple[str, ...], output_names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """The legacy ONNX exporter's ``dynamic_axes``: named batch/height/width inputs, batch of outputs
    (and the masks' h, w)."""
    axes = {name: dict(_AXES[name]) for name in input_names}
    axes.update({name: dict(_MASK_AXES) if name in (MASK_OUTPUT, MASK_POST_OUTPUT) else {0: "batch"}
                 for name in output_names})
    return axes
