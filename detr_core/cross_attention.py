"""The decoder's last cross-attention, per query, as a map over the image (the DETR paper's figures).

Usage::

    with capture_cross_attention(model) as capture:
        outputs = model(images, mask)
    maps = capture.maps()                      # [B, Q, h, w] over the feature map of the padded batch
    per_image = crop_to_image(maps[b], mask[b], orig_hw)   # [Q, H0, W0] over the original image

The forward pass itself never builds attention weights (it runs SDPA); a forward pre-hook records the
inputs of ``model.transformer.decoder.layers[-1].multihead_attn`` and ``attention_weights`` recomputes
the softmax from them, averaged over heads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_core.models.detr import subsample_mask


class CrossAttentionCapture:
    """What the hooks recorded during one forward pass."""

    def __init__(self, attention: nn.Module) -> None:
        self.attention = attention
        self.inputs: tuple[Tensor, Tensor, Tensor | None] | None = None
        self.feature_hw: tuple[int, int] | None = None

    def record_inputs(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        names = ("query", "key", "value", "key_padding_mask")
        # strict=False: the call may pass fewer positional arguments (the rest as keywords) or more (need_weights, ...)
        bound = dict(zip(names, args, strict=False)) | kwargs
        self.inputs = (bound["query"].detach(), bound["key"].detach(), bound.get("key_padding_mask"))

    def record_features(self, _module: nn.Module, _args: Any, output: Tensor) -> None:
        self.feature_hw = (int(output.shape[-2]), int(output.shape[-1]))

    @torch.no_grad()
    def maps(self) -> Tensor:
        """Head-averaged attention of every query over the feature map: [B, Q, h, w]."""
        if self.inputs is None or self.feature_hw is None:
            raise RuntimeError("no forward pass was captured")
        query, key, mask = self.inputs
        weights = self.attention.attention_weights(query, key, mask).mean(dim=1)
        return weights.reshape(weights.shape[0], weights.shape[1], *self.feature_hw)


@contextmanager
def capture_cross_attention(model: nn.Module) -> Iterator[CrossAttentionCapture]:
    """Record the last decoder layer's cross-attention inputs during forward passes inside the block."""
    attention = model.transformer.decoder.layers[-1].multihead_attn
    capture = CrossAttentionCapture(attention)
    handles = [
        attention.register_forward_pre_hook(capture.record_inputs, with_kwargs=True),
        model.backbone[0].register_forward_hook(capture.record_features),
    ]
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()


def crop_to_image(maps: Tensor, mask: Tensor, orig_hw: tuple[int, int]) -> Tensor:
    """One image's maps [Q, h, w] cropped to its unpadded feature cells and resized to ``orig_hw``.

    ``mask`` is the image's input mask [H, W] (True on padding); the valid cells are those the model
    saw as image (the same nearest subsampling as the backbone's feature mask).
    """
    h, w = maps.shape[-2:]
    feature_mask = subsample_mask(mask[None], h, w)[0]
    rows = int((~feature_mask).any(dim=1).sum())
    cols = int((~feature_mask).any(dim=0).sum())
    valid = maps[:, : max(rows, 1), : max(cols, 1)]
    return F.interpolate(valid[None].float(), size=tuple(orig_hw), mode="bilinear", align_corners=False)[0]
