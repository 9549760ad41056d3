"""DETRsegm: the panoptic segmentation model, a mask head on top of any DETR.

For each query, ``bbox_attention`` computes an attention map over the encoder memory (one per head); the
``mask_head`` (a small FPN-like convolution stack) turns the projected features and these maps into a
mask, sharpened with the backbone's intermediate feature maps. Parameter names follow the official
panoptic checkpoints: ``detr.*`` (the detector), ``bbox_attention.*`` and ``mask_head.*``.

Input contract as :class:`~detr_core.models.detr.DETR`: ``images`` [B, 3, H, W], ``mask`` [B, H, W] bool
(True on padding). Output dict: the detector's ``pred_logits`` [B, Q, C+1], ``pred_boxes`` [B, Q, 4] and
``aux_outputs``, plus ``pred_masks`` [B, Q, H/s, W/s]: mask logits at the backbone's finest FPN stride
``s`` (4 for the ResNets and the small CNN) over the whole padded canvas. Masks come from the last
decoder layer only.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_core.models.detr import DETR

GROUPS = 8  # GroupNorm groups of every mask-head layer


def check_mask_head_dims(*, hidden_dim: int, nheads: int) -> None:
    """``ValueError`` unless the mask head can be built: its GroupNorm layers need ``hidden_dim`` a multiple
    of 128 (the last one has ``hidden_dim / 16`` channels in 8 groups) and ``hidden_dim + nheads`` a
    multiple of 8."""
    if hidden_dim % (16 * GROUPS) or (hidden_dim + nheads) % GROUPS:
        raise ValueError(f"the mask head needs hidden_dim a multiple of {16 * GROUPS} and hidden_dim + nheads a "
                         f"multiple of {GROUPS}; got hidden_dim {hidden_dim}, nheads {nheads}")


class MHAttentionMap(nn.Module):
    """Per-query attention maps over the encoder memory: only the softmax weights, no values.

    ``queries`` [B, Q, C], ``memory`` [B, C, h, w], ``mask`` [B, h, w] (True on padding)
    -> [B, Q, nheads, h, w], normalised by one softmax over every head's h*w jointly, 0 on padding.
    """

    def __init__(self, query_dim: int, hidden_dim: int, nheads: int) -> None:
        super().__init__()
        self.nheads = nheads
        self.head_dim = hidden_dim // nheads
        self.normalize_fact = float(self.head_dim) ** -0.5
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        for linear in (self.q_linear, self.k_linear):
            nn.init.zeros_(linear.bias)
            nn.init.xavier_uniform_(linear.weight)

    def forward(self, queries: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        q = self.q_linear(queries)
        k = F.conv2d(memory, self.k_linear.weight.unsqueeze(-1).unsqueeze(-1), self.k_linear.bias)
        qh = q.reshape(q.shape[0], q.shape[1], self.nheads, self.head_dim)
        kh = k.reshape(k.shape[0], self.nheads, self.head_dim, k.shape[-2], k.shape[-1])
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        weights = weights.masked_fill(mask.unsqueeze(1).unsqueeze(1), float("-inf"))
        return F.softmax(weights.flatten(2), dim=-1).reshape(weights.shape)


def _repeat_per_query(x: Tensor, queries: int) -> Tensor:
    """[B, C, h, w] -> [B * Q, C, h, w]: each image's map once per query."""
    return x.unsqueeze(1).repeat(1, queries, 1, 1, 1).flatten(0, 1)


class MaskHeadSmallConv(nn.Module):
    """The mask head: 3x3 convolutions with GroupNorm and ReLU, upsampled three times (nearest) and added
    to 1x1-adapted backbone maps, then one output channel.

    ``features`` [B, C, h, w] (the projected last map), ``attention`` [B, Q, nheads, h, w] and ``fpns``
    (three maps, coarse to fine, of ``fpn_dims`` channels) -> mask logits [B * Q, 1, H_f, W_f] at the
    finest map's size.
    """

    def __init__(self, dim: int, fpn_dims: Tuple[int, int, int], context_dim: int) -> None:
        super().__init__()
        inter = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(GROUPS, dim)
        self.lay2 = nn.Conv2d(dim, inter[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(GROUPS, inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(GROUPS, inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(GROUPS, inter[3])
        self.lay5 = nn.Conv2d(inter[3], inter[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(GROUPS, inter[4])
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        self.dim = dim
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter[3], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: Tensor, attention: Tensor, fpns: List[Tensor]) -> Tensor:
        queries = attention.shape[1]
        x = torch.cat([_repeat_per_query(features, queries), attention.flatten(0, 1)], 1)
        adapted = [_repeat_per_query(self.adapter1(fpns[0]), queries),
                   _repeat_per_query(self.adapter2(fpns[1]), queries),
                   _repeat_per_query(self.adapter3(fpns[2]), queries)]
        return self._convolve(x, adapted)

    @torch.jit.unused
    def forward_rows(self, features: Tensor, attention: Tensor, fpns: List[Tensor], rows: Tensor) -> Tensor:
        """Masks of chosen queries: ``attention`` [N, nheads, h, w] (one row per mask), ``rows`` [N] each row's
        image in ``features`` / ``fpns`` (of B images) -> [N, 1, H_f, W_f]. The backbone maps are adapted once
        per image, then gathered: the same numbers as :meth:`forward`'s rows.

        Gathered with ``index_select``, whose gradient (``index_add_``) sums an image's rows in a fixed order:
        ``x[rows]``'s (``index_put_`` with accumulation) summed them in a thread-dependent order on CPU, so
        two training runs with 2 threads differed by float rounding (1.8e-7 after one epoch)."""
        x = torch.cat([features.index_select(0, rows), attention], 1)
        adapted = [self.adapter1(fpns[0]).index_select(0, rows), self.adapter2(fpns[1]).index_select(0, rows),
                   self.adapter3(fpns[2]).index_select(0, rows)]
        return self._convolve(x, adapted)

    def _convolve(self, x: Tensor, adapted: List[Tensor]) -> Tensor:
        """The convolution stack on [M, dim, h, w] with the adapted backbone maps (one per row, coarse to fine)."""
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        x = F.relu(self.gn3(self.lay3(self._merge(x, adapted[0]))))
        x = F.relu(self.gn4(self.lay4(self._merge(x, adapted[1]))))
        x = F.relu(self.gn5(self.lay5(self._merge(x, adapted[2]))))
        return self.out_lay(x)

    @staticmethod
    def _merge(x: Tensor, fpn: Tensor) -> Tensor:
        """``x`` upsampled (nearest) to the adapted backbone map's size, plus that map."""
        return fpn + F.interpolate(x, size=[fpn.shape[-2], fpn.shape[-1]], mode="nearest")


class DETRsegm(nn.Module):
    """The panoptic model. ``forward(images, mask=None)`` -> dict (see the module docstring).

    ``freeze_detr`` (:meth:`freeze_detr`) stops gradients into the detector (the reference's second stage
    trains the mask head alone on a trained detector).
    """

    def __init__(self, detr: DETR, *, freeze_detr: bool = False) -> None:
        super().__init__()
        self.detr = detr
        self.detr_frozen = False
        if freeze_detr:
            self.freeze_detr()
        hidden_dim = detr.transformer.d_model
        nheads = detr.transformer.nhead
        check_mask_head_dims(hidden_dim=hidden_dim, nheads=nheads)
        backbone = detr.backbone[0]
        self.bbox_attention = MHAttentionMap(hidden_dim, hidden_dim, nheads)
        self.mask_head = MaskHeadSmallConv(hidden_dim + nheads, backbone.fpn_channels, hidden_dim)
        self.mask_stride = int(backbone.fpn_strides[-1])
        self.num_classes = detr.num_classes
        self.num_queries = detr.num_queries
        self.aux_loss = detr.aux_loss

    __jit_unused_properties__ = ["backbone"]

    @torch.jit.unused
    def freeze_detr(self) -> None:
        """No gradient into the detector, and its BatchNorm statistics stay as trained (a BatchNorm backbone
        such as ``small_cnn`` would otherwise update them in train mode); dropout behaves as the reference's."""
        self.detr.requires_grad_(False)
        self.detr_frozen = True
        self._freeze_statistics()

    @torch.jit.unused
    def train(self, mode: bool = True) -> DETRsegm:
        super().train(mode)
        if self.detr_frozen:
            self._freeze_statistics()
        return self

    @torch.jit.unused
    def _freeze_statistics(self) -> None:
        for module in self.detr.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    @property
    def backbone(self) -> nn.Module:
        """The detector's backbone (``Joiner``), as on a ``DETR``."""
        return self.detr.backbone

    def forward_raw(self, images: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """-> logits [L, B, Q, C+1], boxes [L, B, Q, 4] of every decoder layer and masks [B, Q, h, w]
        (logits, from the last decoder layer)."""
        states, memory, features, feature_mask, fpns = self.encode(images, mask)
        logits = self.detr.class_embed(states)
        boxes = self.detr.bbox_embed(states).sigmoid()
        return logits, boxes, self.predict_masks(states[-1], memory, features, feature_mask, fpns)

    def encode(self, images: Tensor, mask: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, Tensor, Tensor, List[Tensor]]:
        """-> decoder states [L, B, Q, C], memory [B, C, h, w], projected features [B, C, h, w], the
        feature mask [B, h, w] and the backbone's intermediate maps (coarse to fine)."""
        mask = self.detr._check_inputs(images, mask)
        last, feature_mask, pos, fpns = self.detr.backbone.forward_fpn(images, mask)
        features = self.detr.input_proj(last)
        states, memory = self.detr.transformer.forward_with_memory(features, feature_mask,
                                                                   self.detr.query_embed.weight, pos)
        return states, memory, features, feature_mask, fpns

    def predict_masks(self, queries: Tensor, memory: Tensor, features: Tensor, feature_mask: Tensor,
                      fpns: List[Tensor]) -> Tensor:
        """``queries`` [B, Q, C] (last decoder layer) -> mask logits [B, Q, h, w]."""
        attention = self.bbox_attention(queries, memory, feature_mask)
        masks = self.mask_head(features, attention, fpns)
        # squeeze + unflatten, not reshape: torch.export cannot prove a symbolic stride-4 map's reshape guard
        return masks.squeeze(1).unflatten(0, (queries.shape[0], queries.shape[1]))

    @torch.jit.unused  # exports script forward_raw (exporters.wrapper); MaskPredictor is no TorchScript type
    def forward(self, images: Tensor, mask: Optional[Tensor] = None) -> Dict[str, Any]:
        """The output dict (module docstring). In training mode ``pred_masks`` is replaced by
        ``mask_predictor`` (:class:`MaskPredictor`): the loss asks it for the matched queries' masks only."""
        if self.training:
            states, memory, features, feature_mask, fpns = self.encode(images, mask)
            logits, boxes = self.detr.class_embed(states), self.detr.bbox_embed(states).sigmoid()
            out: Dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "mask_predictor":
                                   MaskPredictor(self, states[-1], memory, features, feature_mask, fpns)}
        else:
            logits, boxes, masks = self.forward_raw(images, mask)
            out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "pred_masks": masks}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": logits[i], "pred_boxes": boxes[i]}
                                  for i in range(logits.shape[0] - 1)]
        return out


class MaskPredictor:
    """The mask head's inputs of one forward, run for chosen (image, query) pairs only.

    Every query's mask depends on that query alone (its attention map is normalised on its own, the head
    convolves and group-normalises each map on its own), so ``predictor(batch_idx, query_idx)`` [N] -> [N, h, w]
    equals ``pred_masks[batch_idx, query_idx]``, values and gradients. Training asks for the matched queries'
    masks alone (the loss reads no other): the shapes panoptic default trains ~2x faster.
    """

    def __init__(self, model: DETRsegm, queries: Tensor, memory: Tensor, features: Tensor, feature_mask: Tensor,
                 fpns: List[Tensor]) -> None:
        self.model, self.queries, self.memory, self.features = model, queries, memory, features
        self.feature_mask, self.fpns = feature_mask, fpns

    def __call__(self, batch_idx: Tensor, query_idx: Tensor) -> Tensor:
        empty = batch_idx.numel() == 0
        if empty:  # one pair anyway, so the head stays in the graph (DDP expects every parameter used)
            batch_idx, query_idx = batch_idx.new_zeros(1), query_idx.new_zeros(1)
        queries = self.queries[batch_idx, query_idx].unsqueeze(1)  # distinct pairs: no gradient summed
        memory = self.memory.index_select(0, batch_idx)  # not memory[batch_idx]: see forward_rows
        attention = self.model.bbox_attention(queries, memory, self.feature_mask.index_select(0, batch_idx))
        masks = self.model.mask_head.forward_rows(self.features, attention.squeeze(1), self.fpns, batch_idx)
        masks = masks.squeeze(1)
        return masks[:0] if empty else masks
