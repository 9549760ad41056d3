"""DETR: a backbone, a transformer and two heads, with an explicit padding mask.

Input contract: ``images`` [B, 3, H, W] float (ImageNet-normalised), ``mask`` [B, H, W] bool, True on
padding (``None``: no padding). Output dict:

- ``pred_logits`` [B, Q, num_classes + 1]: class logits, the last index is "no object";
- ``pred_boxes`` [B, Q, 4]: normalised cx, cy, w, h, relative to each image's own unpadded size;
- ``aux_outputs`` (when ``aux_loss``): a list of such dicts, one per decoder layer but the last.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_core.models.backbone import Backbone
from detr_core.models.transformer import Transformer


class Joiner(nn.Sequential):
    """``backbone.0`` is the CNN, ``backbone.1`` the position encoding (the official key layout)."""

    def __init__(self, backbone: Backbone, position_encoding: nn.Module) -> None:
        super().__init__(backbone, position_encoding)
        self.num_channels = backbone.num_channels
        self.stride = backbone.stride

    def forward(self, images: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """-> features [B, C, h, w], mask [B, h, w] (nearest-subsampled), pos [B, D, h, w]."""
        features = self[0](images)
        feature_mask, pos = self.mask_and_position(features, mask)
        return features, feature_mask, pos

    def forward_fpn(self, images: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
        """As :meth:`forward`, plus the backbone's three intermediate maps, coarse to fine (mask head)."""
        features, fpns = self[0].forward_fpn(images)
        feature_mask, pos = self.mask_and_position(features, mask)
        return features, feature_mask, pos, fpns

    def mask_and_position(self, features: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """The image ``mask`` nearest-subsampled to ``features``' size, and its position encoding."""
        feature_mask = subsample_mask(mask, features.shape[-2], features.shape[-1])
        return feature_mask, self[1](feature_mask).to(features.dtype)


def nearest_indices(in_size: int, out_size: int, device: torch.device) -> Tensor:
    """[out_size] int64: the source index of each output of torch's nearest downsampling, ``floor(i * s)`` with
    ``s = in / out`` in float32, clamped, computed by graph ops (float32 division and product are exactly
    rounded on every runtime). ONNX ``Resize`` instead computes ``i / (out / in)``: for 4 outputs of 120 rows it
    reads rows 0, 29, 59, 89 where torch reads 0, 30, 60, 90, so padding starting on row 90 went unseen."""
    scale = torch.ones((), dtype=torch.float32, device=device) * in_size / out_size
    index = torch.floor(torch.arange(out_size, device=device).to(torch.float32) * scale).to(torch.int64)
    return index.clamp(max=in_size - 1)


def subsample_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """``mask`` [B, H, W] bool -> [B, height, width]: the pixels ``F.interpolate(mode="nearest")`` picks when
    downsampling, the same in eager, TorchScript, ONNX and OpenVINO (:func:`nearest_indices`)."""
    rows = nearest_indices(mask.shape[-2], height, mask.device)
    cols = nearest_indices(mask.shape[-1], width, mask.device)
    return mask.index_select(1, rows).index_select(2, cols)


class MLP(nn.Module):
    """A stack of linear layers with ReLU between them (``layers.{i}`` as in the official checkpoints)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class DETR(nn.Module):
    """The detector. ``forward(images, mask=None)`` -> dict (see the module docstring)."""

    def __init__(self, *, backbone: Joiner, transformer: Transformer, num_classes: int, num_queries: int,
                 aux_loss: bool = True) -> None:
        super().__init__()
        hidden_dim = transformer.d_model
        self.backbone = backbone
        self.transformer = transformer
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.aux_loss = aux_loss
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)

    def forward_raw(self, images: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """-> logits [L, B, Q, C+1] and boxes [L, B, Q, 4] of every decoder layer (last = final)."""
        mask = self._check_inputs(images, mask)
        features, feature_mask, pos = self.backbone(images, mask)
        states = self.transformer(self.input_proj(features), feature_mask, self.query_embed.weight, pos)
        return self.class_embed(states), self.bbox_embed(states).sigmoid()

    def forward(self, images: Tensor, mask: Optional[Tensor] = None) -> Dict[str, Any]:
        logits, boxes = self.forward_raw(images, mask)
        out: Dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            aux: List[Dict[str, Tensor]] = []
            for i in range(logits.shape[0] - 1):
                aux.append({"pred_logits": logits[i], "pred_boxes": boxes[i]})
            out["aux_outputs"] = aux
        return out

    def _check_inputs(self, images: Tensor, mask: Optional[Tensor]) -> Tensor:
        """Validate the input contract; an absent mask means "no padding"."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        if mask is None:
            return torch.zeros((images.shape[0], images.shape[2], images.shape[3]), dtype=torch.bool,
                               device=images.device)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (True on padding), got {mask.dtype}")
        if mask.dim() != 3 or mask.shape[0] != images.shape[0] or mask.shape[1:] != images.shape[2:]:
            raise ValueError(f"mask must be [B, H, W] = {[images.shape[0]] + list(images.shape[2:])}, "
                             f"got {list(mask.shape)}")
        return mask
