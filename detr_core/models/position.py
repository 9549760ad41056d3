"""Position encodings of the feature map, computed from the padding mask.

``mask`` [B, H, W] bool (True on padding) -> ``pos`` [B, hidden_dim, H, W].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """The sine encoding of "Attention is all you need", over the unpadded extent of each image.

    With ``normalize`` the cumulative coordinates are divided by each image's own height / width, so
    an image's encoding does not depend on how much padding surrounds it.
    """

    def __init__(
        self, *, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
        scale: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, mask: Tensor) -> Tensor:
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = self._interleave(x_embed[:, :, :, None] / dim_t)
        pos_y = self._interleave(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave(angles: Tensor) -> Tensor:
        """[B, H, W, F] angles -> [B, H, W, F] with sin on even and cos on odd features."""
        return torch.stack((angles[:, :, :, 0::2].sin(), angles[:, :, :, 1::2].cos()), dim=4).flatten(3)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute row / column embeddings (feature maps up to 50 x 50)."""

    def __init__(self, *, num_pos_feats: int = 128, max_size: int = 50) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: Tensor) -> Tensor:
        batch, height, width = mask.shape
        x_emb = self.col_embed(torch.arange(width, device=mask.device))
        y_emb = self.row_embed(torch.arange(height, device=mask.device))
        pos = torch.cat(
            [x_emb.unsqueeze(0).expand(height, width, -1), y_emb.unsqueeze(1).expand(height, width, -1)], dim=-1
        )
        return pos.permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1)


def build_position_encoding(kind: str, *, hidden_dim: int) -> nn.Module:
    """``kind`` is "sine" or "learned"; the encoding has ``hidden_dim`` channels."""
    if kind in ("sine", "v2"):
        return PositionEmbeddingSine(num_pos_feats=hidden_dim // 2, normalize=True)
    if kind in ("learned", "v3"):
        return PositionEmbeddingLearned(num_pos_feats=hidden_dim // 2)
    raise ValueError(f"unknown position embedding {kind!r}; choose 'sine' or 'learned'")
