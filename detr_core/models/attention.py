"""Multi-head attention with the parameter names of ``nn.MultiheadAttention`` (so official checkpoints
load unchanged), computed batch-first through ``F.scaled_dot_product_attention`` ("sdpa", the default:
see the attention benchmark in README) or through ``F.multi_head_attention_forward`` ("torch").
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_IMPLS = ("sdpa", "torch")


class MultiheadAttention(nn.Module):
    """``query`` [B, Lq, C], ``key``/``value`` [B, Lk, C], ``key_padding_mask`` [B, Lk] bool (True =
    ignore) -> [B, Lq, C]."""

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0, impl: str = "sdpa") -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; choose one of {ATTENTION_IMPLS}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.impl = impl
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        if self.impl == "torch":
            return self._forward_torch(query, key, value, key_padding_mask)
        q, k, v = self._project(query, key, value)
        attn_mask: Optional[Tensor] = None
        if key_padding_mask is not None:
            attn_mask = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            attn_mask = attn_mask.masked_fill(key_padding_mask, float("-inf"))[:, None, None, :]
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        batch, length = query.shape[0], query.shape[1]
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))

    def attention_weights(self, query: Tensor, key: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Softmax attention [B, heads, Lq, Lk] (for visualisation; the forward pass never builds it)."""
        q, k, _ = self._project(query, key, key)
        logits = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        return logits.softmax(-1)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Input projections, split into heads: each [B, heads, L, C / heads]."""
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        return (
            self._heads(F.linear(query, w_q, b_q)),
            self._heads(F.linear(key, w_k, b_k)),
            self._heads(F.linear(value, w_v, b_v)),
        )

    def _heads(self, x: Tensor) -> Tensor:
        batch, length = x.shape[0], x.shape[1]
        return x.reshape(batch, length, self.num_heads, self.embed_dim // self.num_heads).transpose(1, 2)

    def _forward_torch(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        out, _ = F.multi_head_attention_forward(
            query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), self.embed_dim, self.num_heads,
            self.in_proj_weight, self.in_proj_bias, None, None, False, self.dropout,
            self.out_proj.weight, self.out_proj.bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=False,
        )
        return out.transpose(0, 1)
