"""Hungarian matcher: the reference indices, batched == per image, empty targets, bad boxes."""

from __future__ import annotations

import pytest
import torch

from detr_core.matcher import HungarianMatcher


def test_matcher_indices_equal_the_reference(tiny_expected):
    matcher = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2)
    got = matcher(tiny_expected["outputs"], tiny_expected["targets"])
    for (rows, cols), (want_rows, want_cols) in zip(got, tiny_expected["matcher_indices"], strict=True):
        assert rows.tolist() == list(want_rows) and cols.tolist() == list(want_cols)
        assert rows.dtype == torch.int64 and cols.dtype == torch.int64


def _random_batch(seed: int, batch: int = 3, queries: int = 9, classes: int = 5):
    generator = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(batch, queries, classes + 1, generator=generator),
               "pred_boxes": torch.rand(batch, queries, 4, generator=generator) * 0.5 + 0.1}
    targets = []
    for n in (4, 0, 2)[:batch]:
        targets.append({"labels": torch.randint(0, classes, (n,), generator=generator),
                        "boxes": torch.rand(n, 4, generator=generator) * 0.4 + 0.2})
    return outputs, targets


def test_batched_result_equals_per_image_result():
    outputs, targets = _random_batch(7)
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    for i, target in enumerate(targets):
        single = matcher({k: v[i:i + 1] for k, v in outputs.items()}, [target])[0]
        assert torch.equal(batched[i][0], single[0]) and torch.equal(batched[i][1], single[1])
    assert len(batched[1][0]) == 0


def test_all_targets_empty():
    outputs, _ = _random_batch(1, batch=2)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    result = HungarianMatcher()(outputs, [empty, empty])
    assert [len(r) for r, _ in result] == [0, 0]


def test_matching_minimises_the_cost():
    outputs, targets = _random_batch(3, batch=1)
    matcher = HungarianMatcher()
    rows, cols = matcher(outputs, targets[:1])[0]
    cost = matcher._cost(outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[:1])
    best = cost[rows, cols].sum()
    for _ in range(50):
        perm = torch.randperm(cost.shape[0])[: len(cols)]
        assert cost[perm, cols].sum() >= best - 1e-6


def test_nan_and_degenerate_boxes_are_refused():
    outputs, targets = _random_batch(5, batch=1)
    outputs["pred_boxes"][0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        HungarianMatcher()(outputs, targets[:1])
    outputs, targets = _random_batch(5, batch=1)
    outputs["pred_boxes"][0, 0, 2] = -0.3
    with pytest.raises(ValueError, match="degenerate"):
        HungarianMatcher()(outputs, targets[:1])
