"""DDP on CPU (gloo): gradients equal a one-process step on the combined batch; one writer per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import detr_core.models.small_backbone  # noqa: F401  (registers "small_cnn")
from detr_core.config import LossConfig, ModelConfig
from detr_core.losses import build_criterion, weighted_total
from detr_core.registry import build_model
from tests.training.helpers import TINY_MODEL, make_tiny_shapes

REPO = Path(__file__).resolve().parents[2]
CONFIG = ModelConfig(num_classes=3, **TINY_MODEL)
CE_KEYS = ("loss_ce", "loss_ce_0")


def _batch(objects_per_image: list[int]) -> tuple[torch.Tensor, list[dict]]:
    g = torch.Generator().manual_seed(7)
    images = torch.randn(len(objects_per_image), 3, 64, 64, generator=g, dtype=torch.float64)
    targets = []
    for n in objects_per_image:
        centres = torch.rand(n, 2, generator=g) * 0.5 + 0.25
        sizes = torch.rand(n, 2, generator=g) * 0.3 + 0.1
        targets.append({"labels": torch.randint(0, 3, (n,), generator=g), "boxes": torch.cat([centres, sizes], 1).double()})
    return images, targets


def _model_and_criterion():
    """float64, so that the comparison sees the algebra, not float32 summation-order rounding."""
    torch.manual_seed(0)
    model = build_model(CONFIG).double()
    criterion = build_criterion(LossConfig(), num_classes=3, dec_layers=CONFIG.dec_layers, aux_loss=True)
    return model, criterion


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, store: str, cases: list[list[int]], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = []
        for objects in cases:
            model, criterion = _model_and_criterion()
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            images, targets = _batch(objects)
            half = len(objects) // 2
            part = slice(rank * half, (rank + 1) * half)
            losses = criterion(ddp(images[part]), targets[part])
            weighted_total(losses, criterion.weight_dict).backward()
            results.append(_grads(model))
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


EQUAL = [2, 3, 3, 2]  # the same number of objects on each rank: every loss term averages alike
UNEQUAL = [1, 1, 4, 3]


@pytest.fixture(scope="module")
def ddp_grads(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    """Gradients of one 2-process gloo DDP step for the EQUAL and UNEQUAL batches."""
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "ddp_grads.pt"
    mp.spawn(_worker, args=(str(tmp / "store"), [EQUAL, UNEQUAL], str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def _single_grads(objects: list[int], *, per_rank_ce: bool) -> dict[str, torch.Tensor]:
    """One process, the whole batch; ``per_rank_ce`` averages the CE terms per half, as DDP does."""
    model, criterion = _model_and_criterion()
    images, targets = _batch(objects)
    outputs = model(images)
    losses = criterion(outputs, targets)
    if per_rank_ce:
        half = len(objects) // 2
        halves = [_slice_outputs(outputs, slice(i * half, (i + 1) * half)) for i in range(2)]
        parts = [criterion(h, targets[i * half:(i + 1) * half]) for i, h in enumerate(halves)]
        for key in CE_KEYS:
            losses[key] = (parts[0][key] + parts[1][key]) / 2
    weighted_total(losses, criterion.weight_dict).backward()
    return _grads(model)


def _slice_outputs(outputs: dict, part: slice) -> dict:
    out = {"pred_logits": outputs["pred_logits"][part], "pred_boxes": outputs["pred_boxes"][part]}
    out["aux_outputs"] = [{k: v[part] for k, v in aux.items()} for aux in outputs["aux_outputs"]]
    return out


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


pytestmark = pytest.mark.usefixtures("one_thread")  # training tests: 1 thread is ~20x faster on a loaded 2-core box


def test_ddp_gradients_equal_one_process_on_the_combined_batch(ddp_grads):
    single = _single_grads(EQUAL, per_rank_ce=False)
    assert _max_diff(ddp_grads[0], single) <= 1e-5


def test_ddp_gradient_difference_is_the_per_rank_class_loss_mean(ddp_grads):
    """Unequal objects per rank: CE is a weighted mean per rank (weight 1 for matched queries, eos_coef for
    the rest), so DDP averages two means instead of taking one; every other term (divided by the
    all-reduced num_boxes) is exact. The CE values differ by at most |m0 - m1| |W0 - W1| / (2 (W0 + W1))."""
    corrected = _single_grads(UNEQUAL, per_rank_ce=True)
    plain = _single_grads(UNEQUAL, per_rank_ce=False)
    assert _max_diff(ddp_grads[1], corrected) <= 1e-5  # DDP == the per-rank CE mean, all else combined
    assert _max_diff(ddp_grads[1], plain) > 1e-5  # ... which is not the combined-batch CE
    model, criterion = _model_and_criterion()
    images, targets = _batch(UNEQUAL)
    with torch.no_grad():
        outputs = model(images)
        m = [float(criterion(_slice_outputs(outputs, slice(2 * i, 2 * i + 2)), targets[2 * i:2 * i + 2])["loss_ce"])
             for i in range(2)]
        combined = float(criterion(outputs, targets)["loss_ce"])
    eos, queries = LossConfig().eos_coef, CONFIG.num_queries
    w = [sum(UNEQUAL[2 * i:2 * i + 2]) * (1 - eos) + eos * queries * 2 for i in range(2)]
    bound = abs(m[0] - m[1]) * abs(w[0] - w[1]) / (2 * (w[0] + w[1]))
    assert abs((m[0] + m[1]) / 2 - combined) <= bound + 1e-9


def test_short_ddp_run_has_one_writer(tmp_path):
    root = make_tiny_shapes(tmp_path / "shapes")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli.main", "train", "--nproc", "2", "--coco-path", str(root), "--output-dir",
           str(out), "--epochs", "1", "--batch-size", "2", "--num-workers", "0", "--transforms", "shapes",
           "--image-size", "64", "--no-progress", "--save-every", "1", "--backbone", "small_cnn",
           "--hidden-dim", "32", "--nheads", "2", "--enc-layers", "1", "--dec-layers", "2",
           "--dim-feedforward", "64", "--num-queries", "5", "--dropout", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    assert text.count("epoch 0: train_loss") == 1  # only rank 0 logs
    assert "rank 1 of 2 (gloo)" not in text  # other ranks stay quiet
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0]
    assert len(records[0]["test_coco_eval_bbox"]) == 12
    assert sorted(p.name for p in out.iterdir()) == [".detrtool-train.lock", "checkpoint.pth", "checkpoint_0000.pth",
                                                     "config.yaml", "log.jsonl"]  # the lock file stays (see output_dir)


def test_short_ddp_panoptic_run(tmp_path):
    """train --masks under DDP: the masks of matched queries (MaskPredictor, computed after DDP's forward) train,
    every rank's PQ counts are gathered, one checkpoint with the mask head."""
    from detr_core.checkpoint import read_checkpoint
    from detr_core.data.shapes import ShapesParams, generate_shapes

    root = generate_shapes(tmp_path / "pan", ShapesParams(image_size=64, train_count=4, val_count=4,
                                                           classes=("circle", "square"), max_objects=2),
                           progress=False, panoptic=True)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli.main", "train", "--nproc", "2", "--masks", "--coco-panoptic-path", str(root),
           "--output-dir", str(out), "--epochs", "1", "--batch-size", "2", "--num-workers", "0", "--transforms",
           "shapes", "--image-size", "64", "--no-progress", "--backbone", "small_cnn", "--hidden-dim", "128",
           "--nheads", "8", "--enc-layers", "1", "--dec-layers", "1", "--dim-feedforward", "64", "--num-queries", "6",
           "--dropout", "0", "--pretrain-epochs", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert record["train_loss_mask"] > 0 and record["train_loss_dice"] > 0 and 0 <= record["test_PQ"] <= 1
    assert any(k.startswith("mask_head.") for k in read_checkpoint(out / "checkpoint.pth")["model"])
