"""Backbone pre-training on object crops: the crops themselves, that it learns, and how a run uses it."""

from __future__ import annotations

import json

import pytest
import torch

from detr_core.models.small_backbone import small_cnn_gn_backbone
from detr_core.training.crop_pretrain import object_crops, pretrain_backbone
from detr_core.training.run import train
from tests.training.helpers import make_tiny_shapes, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _target(boxes_px: list[list[float]], labels: list[int], size: tuple[int, int]) -> dict:
    """Pixel x0, y0, x1, y1 boxes of an image of ``size`` (h, w) -> the normalised cx, cy, w, h target."""
    h, w = size
    b = torch.tensor(boxes_px, dtype=torch.float32)
    cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                          (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], dim=1)
    return {"boxes": cxcywh, "labels": torch.tensor(labels), "size": torch.tensor([h, w])}


def test_crops_are_the_pixels_around_each_box_centre():
    images = torch.rand(2, 3, 32, 32)
    targets = [_target([[10, 4, 14, 12], [0, 0, 4, 4]], [2, 0], (32, 32)),
               _target([[18, 10, 22, 14]], [1], (24, 28))]  # second image: 24x28 inside the padded batch
    crops, labels = object_crops(images, targets, crop_size=8)
    assert crops.shape == (3, 3, 8, 8) and labels.tolist() == [2, 0, 1]
    torch.testing.assert_close(crops[0], images[0, :, 4:12, 8:16], atol=1e-6, rtol=0)  # centre (12, 8)
    torch.testing.assert_close(crops[1][:, 2:, 2:], images[0, :, :6, :6], atol=1e-6, rtol=0)  # centre (2, 2)
    assert crops[1][:, 0].abs().max() == 0 and crops[1][:, :, 0].abs().max() == 0  # 2 pixels outside: zero
    torch.testing.assert_close(crops[1][:, 1, 2:], images[0, :, 0, :6], atol=1e-6, rtol=0)  # 1 outside: edge
    torch.testing.assert_close(crops[2], images[1, :, 8:16, 16:24], atol=1e-6, rtol=0)  # its own size


def _bright_or_dark_batches(n_batches: int, seed: int = 0) -> list:
    """Images with one object each: class 1 a bright square, class 0 a dark one, at random places."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        images, targets = torch.zeros(4, 3, 48, 48), []
        for i in range(4):
            label, (y, x) = i % 2, torch.randint(4, 28, (2,), generator=g).tolist()
            images[i, :, y:y + 16, x:x + 16] = 2.0 if label else -2.0
            targets.append(_target([[x, y, x + 16, y + 16]], [label], (48, 48)))
        batches.append((images, torch.zeros(4, 48, 48, dtype=torch.bool), targets))
    return batches


def test_pretraining_learns_to_classify_the_crops_and_changes_only_the_backbone():
    torch.manual_seed(0)
    backbone = small_cnn_gn_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    stats = pretrain_backbone(backbone, _bright_or_dark_batches(6), num_classes=2, epochs=4,
                              device=torch.device("cpu"), crop_size=16, progress=False)
    assert stats.epochs == 4 and stats.crops == 4 * 6 * 4
    assert stats.accuracy >= 0.95
    after = backbone.state_dict()
    assert after.keys() == before.keys()  # the classification head is not kept
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_skipped_classes_give_no_crops():
    """A panoptic model's stuff classes are regions, not objects: no crop is centred on them."""
    backbone = small_cnn_gn_backbone()
    stats = pretrain_backbone(backbone, _bright_or_dark_batches(6), num_classes=2, epochs=1,
                              device=torch.device("cpu"), crop_size=16, progress=False, skip_classes=(1,))
    labels = torch.cat([t["labels"] for _, _, targets in _bright_or_dark_batches(6) for t in targets])
    assert 0 < stats.crops == int((labels == 0).sum()) < labels.numel()


def test_the_panoptic_default_preset():
    from detr_core.training.train_config import resolve_train_config

    panoptic, detector = resolve_train_config({"masks": True}), resolve_train_config({})
    assert (panoptic.epochs, panoptic.output_dir, panoptic.model.masks) == (9, "runs/shapes-panoptic", True)
    assert (detector.epochs, detector.output_dir, detector.model.masks) == (16, "runs/shapes", False)
    assert panoptic.model.replace(masks=False) == detector.model and panoptic.lr == detector.lr


def test_a_run_pretrains_first_and_logs_it_but_not_when_weights_are_given(tmp_path):
    root = make_tiny_shapes(tmp_path / "shapes")
    out = train(tiny_config(root, tmp_path / "run", pretrain_epochs=2, pretrain_crop_size=32))
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert first["pretrain_epochs"] == 2 and first["pretrain_crops"] > 0
    assert first["train_minutes"] * 60 >= first["pretrain_seconds"] > 0

    weights = tmp_path / "backbone.pth"
    torch.save(small_cnn_gn_backbone().body.state_dict(), weights)
    out = train(tiny_config(root, tmp_path / "given", pretrain_epochs=2, backbone_weights=str(weights)))
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert "pretrain_epochs" not in first
