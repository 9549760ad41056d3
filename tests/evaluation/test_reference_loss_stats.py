"""Eval's loss statistics equal the reference's ``main.py --eval`` (MetricLogger global averages).

The reference logs, once per batch, ``loss`` (the weighted sum), every weighted loss scaled by its weight,
every criterion output with the suffix ``_unscaled``, and ``class_error``; each meter is a SmoothedValue
updated with n=1, so its global average is the mean over batches. ``reference_metric_logger`` below is
written from that definition. Batch 2 is anchored to the reference's own losses (tiny_expected.pt);
other batchings use per-batch losses of detrtool's criterion, whose parity with the reference's
SetCriterion is tests/test_losses.py's.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from detr_core.checkpoint import load_checkpoint
from detr_core.config import LossConfig
from detr_core.data.batching import make_collate
from detr_core.data.sources import DatasetSource, build_dataset
from detr_core.losses import build_criterion
from detr_core.presets import eval_transforms
from detr_core.training.engine import evaluate
from tests.training.helpers import make_small_coco

pytestmark = pytest.mark.usefixtures("one_thread")
ANN = "annotations/instances_val2017.json"


def reference_metric_logger(batches: list[dict[str, float]], weight_dict: dict[str, float]) -> dict[str, float]:
    """Global averages of the reference's eval meters over per-batch loss dicts (n=1 per batch)."""
    meters: dict[str, list[float]] = defaultdict(list)
    for losses in batches:
        scaled = {k: float(v) * weight_dict[k] for k, v in losses.items() if k in weight_dict}
        unscaled = {f"{k}_unscaled": float(v) for k, v in losses.items()}
        for key, value in {"loss": sum(scaled.values()), **scaled, **unscaled,
                           "class_error": float(losses["class_error"])}.items():
            meters[key].append(value)
    return {k: sum(v) / len(v) for k, v in meters.items()}


def _drop_aux(values: dict) -> dict:
    return {k: v for k, v in values.items() if not k.rsplit("_", 1)[-1].isdigit()}


@pytest.mark.parametrize("aux", [True, False])
def test_batch_of_two_equals_reference_losses(tiny_checkpoint_path, tiny_expected, aux):
    """One batch of the fixture's two images: eval's statistics equal the reference MetricLogger built from
    the reference's own losses (``tiny_expected['losses']``), with and without the auxiliary layer."""
    model = load_checkpoint(tiny_checkpoint_path, nheads=4)
    model.aux_loss = aux
    criterion = build_criterion(LossConfig(), num_classes=7, dec_layers=2, aux_loss=aux)
    targets = [{**t, "image_id": torch.tensor(i)} for i, t in enumerate(tiny_expected["targets"])]
    loader = [(tiny_expected["padded"], tiny_expected["mask"], targets)]
    stats, _ = evaluate(model, criterion, loader, device=torch.device("cpu"), weight_dict=criterion.weight_dict,
                        progress=False)
    losses = {k: float(v) for k, v in tiny_expected["losses"].items()}
    weights = {k: float(v) for k, v in tiny_expected["weight_dict"].items()}
    if not aux:
        losses, weights = _drop_aux(losses), _drop_aux(weights)
    expected = reference_metric_logger([losses], weights)
    assert set(stats) == set(expected)
    assert {"loss_ce_0", "loss_ce_0_unscaled", "cardinality_error_0_unscaled"} <= set(stats) if aux else True
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, abs=1e-4, rel=1e-4), key
    if aux:
        assert stats["loss"] == pytest.approx(float(tiny_expected["weighted_total"]), abs=1e-4)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return make_small_coco(tmp_path_factory.mktemp("coco"))


def _per_batch_losses(checkpoint: Path, root: Path, batch_size: int, aux: bool) -> tuple[list[dict], dict, list[int]]:
    """What the reference's loop sees: the criterion's outputs per batch of the same loader as eval's."""
    model = load_checkpoint(checkpoint, nheads=4, aux_loss=aux)
    criterion = build_criterion(LossConfig(), num_classes=7, dec_layers=2, aux_loss=aux)
    source = DatasetSource(val_images=str(root / "val2017"), val_ann=str(root / ANN))
    dataset = build_dataset(source, "val", eval_transforms("detr", 128, 64), progress=False).dataset
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=make_collate(None))
    batches, sizes = [], []
    with torch.no_grad():
        for images, mask, targets in loader:
            losses = criterion(model(images, mask), targets)
            batches.append({k: float(v) for k, v in losses.items()})
            sizes.append(images.shape[0])
    return batches, criterion.weight_dict, sizes


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("aux", [True, False])
def test_detrtool_eval_statistics_are_the_reference_metric_logger(tiny_checkpoint_path, coco_root, tmp_path,
                                                                  batch_size, aux):
    """``detrtool eval`` (metrics.json and the printed line) at batch 1 and 2, with and without
    ``--no-aux-loss``: the reference's keys and per-batch averages; at batch 2 (batches of 2, 2, 1 images)
    the per-image weighted mean differs, so the averaging is what is tested."""
    args = ["eval", "--resume", str(tiny_checkpoint_path), "--val-images", str(coco_root / "val2017"),
            "--val-ann", str(coco_root / ANN), "--output-dir", str(tmp_path), "--eval-size", "64", "--nheads", "4",
            "--batch-size", str(batch_size), "--no-progress", *([] if aux else ["--no-aux-loss"])]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "metrics.json").read_text())["loss"]
    batches, weights, sizes = _per_batch_losses(tiny_checkpoint_path, coco_root, batch_size, aux)
    expected = reference_metric_logger(batches, weights)
    assert set(stats) == set(expected)
    assert any(k.endswith("_0") for k in stats) == aux
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, abs=1e-5, rel=1e-5), key
    assert f"loss={expected['loss']:.4f}" in result.output
    if batch_size == 2:
        assert sizes == [2, 2, 1]
        per_image = sum(b["loss_bbox"] * n for b, n in zip(batches, sizes, strict=True)) / sum(sizes) * weights["loss_bbox"]
        assert abs(per_image - stats["loss_bbox"]) > 1e-3
