"""Set criterion against the reference: every loss, the weights, the total and six gradients."""

from __future__ import annotations

import pytest
import torch

from detr_core import load_checkpoint
from detr_core.config import LossConfig
from detr_core.losses import SetCriterion, build_criterion, build_weight_dict, weighted_total


@pytest.fixture()
def criterion():
    return build_criterion(LossConfig(), num_classes=7, dec_layers=2, aux_loss=True)


def test_every_loss_matches_the_reference(criterion, tiny_expected):
    losses = criterion(tiny_expected["outputs"], tiny_expected["targets"])
    assert set(losses) == set(tiny_expected["losses"])
    for key, want in tiny_expected["losses"].items():
        assert abs(float(losses[key]) - want) <= 1e-4, key


def test_weight_dict_and_weighted_total_match_the_reference(criterion, tiny_expected):
    assert criterion.weight_dict == tiny_expected["weight_dict"]
    losses = criterion(tiny_expected["outputs"], tiny_expected["targets"])
    total = weighted_total(losses, criterion.weight_dict)
    assert abs(float(total) - float(tiny_expected["weighted_total"])) <= 1e-4


def test_gradients_match_the_reference(criterion, tiny_checkpoint_path, tiny_expected):
    model = load_checkpoint(tiny_checkpoint_path, nheads=4)  # eval mode, as the fixture
    outputs = model(tiny_expected["padded"], tiny_expected["mask"])
    total = weighted_total(criterion(outputs, tiny_expected["targets"]), criterion.weight_dict)
    total.backward()
    params = dict(model.named_parameters())
    for name, want in tiny_expected["grads"].items():
        got = params[name].grad
        rel = (got - want).norm() / want.norm()
        assert rel <= 1e-4, f"{name}: relative difference {rel:.2e}"


def test_weight_dict_without_aux_loss():
    weights = build_weight_dict(LossConfig(bbox_loss_coef=3), dec_layers=6, aux_loss=False)
    assert weights == {"loss_ce": 1.0, "loss_bbox": 3, "loss_giou": 2.0}
    assert len(build_weight_dict(LossConfig(), dec_layers=6, aux_loss=True)) == 18


def test_images_without_targets(criterion, tiny_expected):
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    losses = criterion(tiny_expected["outputs"], empty)
    assert float(losses["loss_bbox"]) == 0 and float(losses["loss_giou"]) == 0
    assert torch.isfinite(losses["loss_ce"]) and float(losses["class_error"]) == 100


def test_non_finite_loss_names_the_key():
    with pytest.raises(FloatingPointError, match="loss_giou"):
        weighted_total({"loss_ce": torch.tensor(1.0), "loss_giou": torch.tensor(float("nan"))},
                       {"loss_ce": 1.0, "loss_giou": 2.0})


def test_degenerate_predicted_boxes_do_not_give_silent_nan(criterion, tiny_expected):
    outputs = {k: v.clone() for k, v in tiny_expected["outputs"].items() if k != "aux_outputs"}
    outputs["pred_boxes"][:, :, 2] = float("nan")
    with pytest.raises(FloatingPointError):
        criterion(outputs, tiny_expected["targets"])


def test_negative_width_is_a_clear_error_not_nan(criterion, tiny_expected):
    outputs = {k: v.clone() for k, v in tiny_expected["outputs"].items() if k != "aux_outputs"}
    outputs["pred_boxes"][:, :, 2] = -0.2
    with pytest.raises(ValueError, match="degenerate"):
        criterion(outputs, tiny_expected["targets"])


def test_num_boxes_is_averaged_over_processes(monkeypatch):
    """Two processes holding 3 and 5 boxes both normalise by 4 (all-reduce sum / world size)."""
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.add_(5.0))
    targets = [{"labels": torch.zeros(2, dtype=torch.int64)}, {"labels": torch.zeros(1, dtype=torch.int64)}]
    assert float(SetCriterion.num_boxes(targets, torch.device("cpu"))) == 4.0
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor)
    assert float(SetCriterion.num_boxes([{"labels": torch.zeros(0)}], torch.device("cpu"))) == 1.0


def test_losses_subset_and_unknown_loss():
    matcher = build_criterion(LossConfig(), num_classes=3, dec_layers=1, aux_loss=False).matcher
    with pytest.raises(ValueError, match="unknown losses"):
        SetCriterion(num_classes=3, matcher=matcher, weight_dict={}, losses=("polygons",))
    only_boxes = SetCriterion(num_classes=3, matcher=matcher, weight_dict={}, losses=("boxes",))
    outputs = {"pred_logits": torch.randn(1, 4, 4), "pred_boxes": torch.rand(1, 4, 4) * 0.5 + 0.1}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    assert set(only_boxes(outputs, targets)) == {"loss_bbox", "loss_giou"}
