"""Position encodings: the sine encoding against the reference, the learned one's contract."""

from __future__ import annotations

import torch

from detr_core.models.position import PositionEmbeddingLearned, build_position_encoding


def test_sine_encoding_matches_reference(tiny_expected):
    fixture = tiny_expected["position_sine"]
    encoding = build_position_encoding("sine", hidden_dim=fixture["hidden_dim"])
    pos = encoding(fixture["mask"])
    assert pos.shape == fixture["pos"].shape
    assert (pos - fixture["pos"]).abs().max() <= 1e-5


def test_sine_encoding_of_an_image_ignores_its_padding():
    encoding = build_position_encoding("sine", hidden_dim=32)
    small = torch.zeros(1, 6, 7, dtype=torch.bool)
    padded = torch.ones(1, 10, 12, dtype=torch.bool)
    padded[:, :6, :7] = False
    assert torch.allclose(encoding(small), encoding(padded)[:, :, :6, :7], atol=1e-6)


def test_learned_encoding_shape_and_layout():
    encoding = PositionEmbeddingLearned(num_pos_feats=8)
    pos = encoding(torch.zeros(2, 3, 5, dtype=torch.bool))
    assert pos.shape == (2, 16, 3, 5)
    assert torch.equal(pos[0, :8, 1, 4], encoding.col_embed.weight[4].detach())
    assert torch.equal(pos[1, 8:, 2, 0], encoding.row_embed.weight[2].detach())
