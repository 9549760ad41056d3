"""The DETR encoder-decoder transformer (post-norm by default, pre-norm as an option).

All sequences are batch-first: ``src`` [B, HW, C], ``tgt`` [B, Q, C].
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_core.models.attention import MultiheadAttention


class _FeedForwardLayer(nn.Module):
    """Holds a layer's feed-forward block: linear1 -> relu -> dropout -> linear2, named as in the
    official checkpoints (directly on the layer, no sub-module)."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

    def ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(_FeedForwardLayer):
    """Self-attention over the flattened feature map, then a feed-forward block."""

    def __init__(self, *, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool,
                 attention_impl: str = "sdpa") -> None:
        super().__init__(d_model, dim_feedforward, dropout)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, impl=attention_impl)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        """``src``, ``pos`` [B, HW, C]; ``key_padding_mask`` [B, HW] -> [B, HW, C]."""
        if self.normalize_before:
            x = self.norm1(src)
            src = src + self.dropout1(self.self_attn(x + pos, x + pos, x, key_padding_mask))
            return src + self.dropout2(self.ffn(self.norm2(src)))
        src = self.norm1(src + self.dropout1(self.self_attn(src + pos, src + pos, src, key_padding_mask)))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DecoderLayer(_FeedForwardLayer):
    """Self-attention among queries, cross-attention to the encoder memory, then feed-forward."""

    def __init__(self, *, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool,
                 attention_impl: str = "sdpa") -> None:
        super().__init__(d_model, dim_feedforward, dropout)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, impl=attention_impl)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, impl=attention_impl)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, memory_mask: Tensor) -> Tensor:
        """``tgt``, ``query_pos`` [B, Q, C]; ``memory``, ``pos`` [B, HW, C]; ``memory_mask`` [B, HW]."""
        if self.normalize_before:
            x = self.norm1(tgt)
            tgt = tgt + self.dropout1(self.self_attn(x + query_pos, x + query_pos, x, None))
            x = self.norm2(tgt)
            tgt = tgt + self.dropout2(self.multihead_attn(x + query_pos, memory + pos, memory, memory_mask))
            return tgt + self.dropout3(self.ffn(self.norm3(tgt)))
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(tgt + query_pos, tgt + query_pos, tgt, None)))
        cross = self.multihead_attn(tgt + query_pos, memory + pos, memory, memory_mask)
        tgt = self.norm2(tgt + self.dropout2(cross))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer], norm: Optional[nn.LayerNorm]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        if self.norm is not None:
            src = self.norm(src)
        return src


class Decoder(nn.Module):
    def __init__(self, layers: list[DecoderLayer], norm: nn.LayerNorm) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, memory_mask: Tensor) -> Tensor:
        """-> [L, B, Q, C]: the normalised output of every decoder layer."""
        outputs: list[Tensor] = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos, memory_mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    """``src`` [B, C, H, W], ``mask`` [B, H, W], ``query_embed`` [Q, C], ``pos`` [B, C, H, W]
    -> decoder states [L, B, Q, C] (one per decoder layer); :meth:`forward_with_memory` also returns the
    encoder memory."""

    def __init__(self, *, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False, attention_impl: str = "sdpa") -> None:
        super().__init__()
        kwargs = dict(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                      normalize_before=normalize_before, attention_impl=attention_impl)
        self.encoder = Encoder([EncoderLayer(**kwargs) for _ in range(num_encoder_layers)],
                               nn.LayerNorm(d_model) if normalize_before else None)
        self.decoder = Decoder([DecoderLayer(**kwargs) for _ in range(num_decoder_layers)], nn.LayerNorm(d_model))
        self.d_model = d_model
        self.nhead = nhead
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos: Tensor) -> Tensor:
        return self.forward_with_memory(src, mask, query_embed, pos)[0]

    def forward_with_memory(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos: Tensor
                            ) -> tuple[Tensor, Tensor]:
        """-> decoder states [L, B, Q, C] and the encoder memory [B, C, H, W] (the panoptic head reads it)."""
        batch = src.shape[0]
        src_shape = src.shape
        src = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        query_pos = query_embed.unsqueeze(0).expand(batch, -1, -1)
        memory = self.encoder(src, pos, mask)
        tgt = torch.zeros_like(query_pos)
        states = self.decoder(tgt, memory, pos, query_pos, mask)
        return states, memory.transpose(1, 2).reshape(src_shape)
