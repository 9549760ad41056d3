"""The SDPA attention equals torch's multi-head attention with the same parameters."""

from __future__ import annotations

import torch

from detr_core.models.attention import MultiheadAttention


def test_sdpa_equals_torch_multihead_attention_with_padding_mask():
    torch.manual_seed(0)
    ours = MultiheadAttention(32, 4, impl="sdpa").eval()
    reference = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    reference.load_state_dict(ours.state_dict())
    query, key = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 6:] = True
    expected, _ = reference(query, key, key, key_padding_mask=padding, need_weights=False)
    assert torch.allclose(ours(query, key, key, padding), expected, atol=1e-6)
    ours.impl = "torch"
    assert torch.allclose(ours(query, key, key, padding), expected, atol=1e-6)


def test_attention_weights_ignore_padded_keys():
    attention = MultiheadAttention(16, 2).eval()
    padding = torch.tensor([[False, False, True]])
    weights = attention.attention_weights(torch.randn(1, 4, 16), torch.randn(1, 3, 16), padding)
    assert weights.shape == (1, 2, 4, 3)
    assert torch.all(weights[..., 2] == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 2, 4))
