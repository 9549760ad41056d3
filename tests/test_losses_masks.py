"""The masks loss (sigmoid focal + dice) against the reference's segmentation fixture, and what its padding
definition implies: target masks are zero-padded to the batch's largest size, so the focal mean runs over
that canvas; a batch is the ``num_boxes``-weighted sum of its images only once each image's targets are
padded to the same canvas, and an image without targets adds no term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detr_core.checkpoint import load_checkpoint
from detr_core.config import LossConfig
from detr_core.losses import build_criterion, build_weight_dict, weighted_total

MASK_KEYS = ("loss_mask", "loss_dice")


@pytest.fixture()
def criterion():
    return build_criterion(LossConfig(), num_classes=12, dec_layers=2, aux_loss=True, masks=True)


def _image(outputs: dict, i: int) -> dict:
    """The last layer's outputs of image ``i`` alone ([1, ...])."""
    return {k: outputs[k][i:i + 1] for k in ("pred_logits", "pred_boxes", "pred_masks")}


def _pad_masks(target: dict, height: int, width: int) -> dict:
    """``target`` with its masks zero-padded bottom/right to (height, width)."""
    masks = target["masks"]
    padded = torch.zeros(masks.shape[0], height, width, dtype=torch.bool)
    padded[:, :masks.shape[1], :masks.shape[2]] = masks
    return {**target, "masks": padded}


def _empty_target(height: int, width: int) -> dict:
    return {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4),
            "masks": torch.zeros(0, height, width, dtype=torch.bool)}


def test_every_loss_matches_the_reference(criterion, segm_expected):
    losses = criterion(segm_expected["outputs"], segm_expected["targets"])
    assert set(losses) == set(segm_expected["losses"])
    for key, want in segm_expected["losses"].items():
        assert abs(float(losses[key]) - want) <= 1e-4, key


def test_weight_dict_and_weighted_total_match_the_reference(criterion, segm_expected):
    assert criterion.weight_dict == segm_expected["weight_dict"]
    total = weighted_total(criterion(segm_expected["outputs"], segm_expected["targets"]), criterion.weight_dict)
    assert abs(float(total) - float(segm_expected["weighted_total"])) <= 1e-4


def test_auxiliary_layers_get_no_masks_loss(criterion, segm_expected):
    """The weight dict names loss_mask_0 / loss_dice_0 (as the reference's does) but no such loss exists,
    and the weighted total is the sum over the losses present."""
    losses = criterion(segm_expected["outputs"], segm_expected["targets"])
    assert "loss_mask_0" in criterion.weight_dict and "loss_mask_0" not in losses and "loss_dice_0" not in losses
    by_hand = sum(float(losses[k]) * w for k, w in criterion.weight_dict.items() if k in losses)
    assert abs(float(weighted_total(losses, criterion.weight_dict)) - by_hand) <= 1e-5


def test_targets_padded_beforehand_give_the_same_losses(criterion, segm_expected):
    """Zero-padding bottom/right to the batch maximum (120 x 128 from 96 x 128 and 120 x 88) is the padding
    the criterion applies itself: padding the targets first changes nothing."""
    targets = [_pad_masks(t, 120, 128) for t in segm_expected["targets"]]
    padded = criterion(segm_expected["outputs"], targets)
    raw = criterion(segm_expected["outputs"], segm_expected["targets"])
    for key in MASK_KEYS:
        assert float(padded[key]) == pytest.approx(float(raw[key]), abs=1e-7), key


def test_target_masks_sit_at_the_top_left_of_the_canvas(criterion, segm_expected):
    """Predictions drawn from the targets placed top-left on the 120 x 128 canvas (padding bottom/right)
    score well; the same targets placed bottom/right of the canvas (padding top/left) score far worse."""
    outputs, targets = segm_expected["outputs"], segm_expected["targets"]
    pred = torch.full_like(outputs["pred_masks"], -8.0)
    for i, (query, j) in enumerate(criterion.matcher(outputs, targets)):
        canvas = _pad_masks(targets[i], 120, 128)["masks"][j].float()
        pred[i, query] = 16 * F.avg_pool2d(canvas[:, None], 4)[:, 0] - 8
    drawn = {**outputs, "pred_masks": pred}
    shifted = []
    for t in targets:
        masks = t["masks"]
        canvas = torch.zeros(masks.shape[0], 120, 128, dtype=torch.bool)
        canvas[:, 120 - masks.shape[1]:, 128 - masks.shape[2]:] = masks
        shifted.append({**t, "masks": canvas})
    right, moved = criterion(drawn, targets), criterion(drawn, shifted)
    assert float(right["loss_dice"]) < 0.2 and float(moved["loss_dice"]) > float(right["loss_dice"]) + 0.5
    assert float(moved["loss_mask"]) > 5 * float(right["loss_mask"])


def test_batch_is_the_weighted_sum_of_its_images_on_the_batch_canvas(criterion, segm_expected):
    """num_boxes x batch loss = sum over images of n_i x (image i's loss) when each image alone has its
    targets padded to the batch canvas; at its own size image 1 (120 x 88) gives another focal mean."""
    outputs, targets = segm_expected["outputs"], segm_expected["targets"]
    batch = criterion(outputs, targets)
    counts = [len(t["labels"]) for t in targets]
    alone = [criterion(_image(outputs, i), [_pad_masks(t, 120, 128)]) for i, t in enumerate(targets)]
    for key in MASK_KEYS:
        summed = sum(n * float(losses[key]) for n, losses in zip(counts, alone, strict=True))
        assert float(batch[key]) * sum(counts) == pytest.approx(summed, abs=1e-5), key
    own_size = criterion(_image(outputs, 1), [targets[1]])
    assert abs(float(own_size["loss_mask"]) - float(alone[1]["loss_mask"])) > 1e-3


def test_an_image_without_targets_contributes_nothing(criterion, segm_expected):
    """An empty image adds no term; its (empty) masks still take part in the batch canvas, as the
    reference's nested-tensor padding of the target masks does."""
    outputs, first = segm_expected["outputs"], segm_expected["targets"][0]
    with_empty = criterion(outputs, [first, _empty_target(120, 88)])
    first_on_canvas = criterion(_image(outputs, 0), [_pad_masks(first, 120, 128)])
    small_empty = criterion(outputs, [first, _empty_target(50, 60)])
    first_alone = criterion(_image(outputs, 0), [first])
    for key in MASK_KEYS:
        assert float(with_empty[key]) == pytest.approx(float(first_on_canvas[key]), abs=1e-6), key
        assert float(small_empty[key]) == pytest.approx(float(first_alone[key]), abs=1e-6), key


def test_a_batch_without_targets_gives_zero_with_a_gradient(criterion, segm_expected):
    outputs = {k: v.clone().requires_grad_() for k, v in _image(segm_expected["outputs"], 0).items()}
    losses = criterion(outputs, [_empty_target(96, 128)])
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    weighted_total(losses, criterion.weight_dict).backward()
    assert torch.count_nonzero(outputs["pred_masks"].grad) == 0


def test_mask_gradient_flows_only_to_matched_queries(criterion, segm_expected):
    outputs = {k: v.clone().requires_grad_() for k, v in segm_expected["outputs"].items() if k != "aux_outputs"}
    losses = criterion(outputs, segm_expected["targets"])
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    touched = outputs["pred_masks"].grad.flatten(2).abs().sum(-1) > 0
    matched = [len(t["labels"]) for t in segm_expected["targets"]]
    assert touched.sum(1).tolist() == matched


def test_focal_and_dice_by_hand_on_a_two_pixel_mask():
    """One query, one target of 1 x 2 pixels (one on, one off), logits 0 and 0 at the same size."""
    criterion = build_criterion(LossConfig(), num_classes=1, dec_layers=1, aux_loss=False, masks=True)
    outputs = {"pred_logits": torch.zeros(1, 1, 2), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.5, 0.5]]]),
               "pred_masks": torch.zeros(1, 1, 1, 2)}
    target = {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]),
              "masks": torch.tensor([[[True, False]]])}
    losses = criterion(outputs, [target])
    ce = torch.log(torch.tensor(2.0))  # p = 0.5: cross-entropy log 2 each pixel, (1 - p_t)^2 = 1/4
    focal = (0.25 * ce / 4 + 0.75 * ce / 4) / 2
    assert float(losses["loss_mask"]) == pytest.approx(float(focal), rel=1e-6)
    assert float(losses["loss_dice"]) == pytest.approx(1 - (2 * 0.5 + 1) / (1.0 + 1 + 1), rel=1e-6)


def test_mask_coefficients_reach_the_weight_dict():
    config = LossConfig(mask_loss_coef=3.0, dice_loss_coef=0.5)
    weights = build_weight_dict(config, dec_layers=3, aux_loss=True, masks=True)
    assert {k: weights[k] for k in ("loss_mask", "loss_dice", "loss_mask_1", "loss_dice_1")} == {
        "loss_mask": 3.0, "loss_dice": 0.5, "loss_mask_1": 3.0, "loss_dice_1": 0.5}
    assert len(weights) == 15
    detector = build_weight_dict(config, dec_layers=3, aux_loss=True)
    assert not any("mask" in k or "dice" in k for k in detector)


def test_a_detector_criterion_has_no_masks_loss(segm_expected):
    criterion = build_criterion(LossConfig(), num_classes=12, dec_layers=2, aux_loss=True)
    losses = criterion(segm_expected["outputs"], segm_expected["targets"])
    assert set(segm_expected["losses"]) - set(losses) == set(MASK_KEYS)


def test_missing_pred_masks_is_a_clear_error(criterion, segm_expected):
    outputs = {k: v for k, v in segm_expected["outputs"].items() if k != "pred_masks"}
    with pytest.raises(ValueError, match="pred_masks"):
        criterion(outputs, segm_expected["targets"])


@pytest.mark.parametrize(("masks", "match"), [
    (None, r"targets\[1\]\['masks'\]"),
    (torch.zeros(2, 120, 88, dtype=torch.bool), r"targets\[1\]\['masks'\] has shape \[2, 120, 88\]"),
    (torch.zeros(120, 88, dtype=torch.bool), r"targets\[1\]\['masks'\] has shape \[120, 88\]"),
])
def test_bad_target_masks_are_a_clear_error(criterion, segm_expected, masks, match):
    second = {k: v for k, v in segm_expected["targets"][1].items() if k != "masks"}
    if masks is not None:
        second["masks"] = masks
    with pytest.raises(ValueError, match=match):
        criterion(segm_expected["outputs"], [segm_expected["targets"][0], second])


def test_bilinear_upsampling_is_the_one_applied(criterion, segm_expected):
    """Predictions at stride 4 upsampled bilinearly (align_corners=False): feeding them already upsampled
    to the 120 x 128 canvas gives the same losses; nearest upsampling would not."""
    outputs = dict(segm_expected["outputs"])
    losses = criterion(outputs, segm_expected["targets"])
    for mode, same in (("bilinear", True), ("nearest", False)):
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        big = F.interpolate(outputs["pred_masks"], size=(120, 128), mode=mode, **kwargs)
        again = criterion({**outputs, "pred_masks": big}, segm_expected["targets"])
        close = abs(float(again["loss_mask"]) - float(losses["loss_mask"])) <= 1e-6
        assert close == same, mode


def test_gradients_and_pred_masks_match_the_reference(criterion, segm_checkpoint_path, segm_expected):
    """The reference's model in eval mode, forward on the padded batch, weighted total backward: the six
    named gradients within 1e-4 relative (max |Δ| / max |ref|) and pred_masks within 1e-4."""
    model = load_checkpoint(segm_checkpoint_path, nheads=8)
    outputs = model(segm_expected["padded"], segm_expected["mask"])
    torch.testing.assert_close(outputs["pred_masks"].detach(), segm_expected["outputs"]["pred_masks"],
                               rtol=0, atol=1e-4)
    weighted_total(criterion(outputs, segm_expected["targets"]), criterion.weight_dict).backward()
    params = dict(model.named_parameters())
    for name, want in segm_expected["grads"].items():
        rel = float((params[name].grad - want).abs().max() / want.abs().max())
        assert rel <= 1e-4, f"{name}: relative difference {rel:.2e}"
