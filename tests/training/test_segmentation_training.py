"""``detrtool train --masks`` and ``detrtool eval`` of a panoptic model through the real CLI, on a tiny
shapes panoptic set: the run logs mask losses, mask AP and PQ; the checkpoint records the stuff classes;
``--frozen-weights DET --masks`` trains the mask head alone (the detector bit-identical); eval prints PQ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from detr_core.checkpoint import read_checkpoint
from detr_core.data.shapes import ShapesParams, generate_shapes

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = ["--backbone", "small_cnn", "--hidden-dim", "128", "--nheads", "8", "--enc-layers", "1", "--dec-layers", "2",
         "--dim-feedforward", "64", "--num-queries", "8"]
RUN = ["--epochs", "1", "--batch-size", "3", "--num-workers", "0", "--transforms", "shapes", "--image-size", "64",
       "--pretrain-epochs", "0", "--no-progress", "--save-every", "0"]


@pytest.fixture(scope="module")
def panoptic_root(tmp_path_factory) -> Path:
    params = ShapesParams(image_size=64, train_count=6, val_count=3, classes=("circle", "square"), max_objects=2)
    return generate_shapes(tmp_path_factory.mktemp("pan"), params, progress=False, panoptic=True)


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def segm_run(panoptic_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("segm_run")
    _run(["train", "--masks", "--coco-panoptic-path", panoptic_root, *MODEL, *RUN, "--output-dir", out])
    return out


def test_train_masks_logs_mask_losses_mask_ap_and_pq(segm_run):
    record = _records(segm_run)[-1]
    for key in ("train_loss_mask", "train_loss_dice", "test_loss_mask", "test_loss_dice"):
        assert record[key] > 0, key
    assert len(record["test_coco_eval_masks"]) == 12 and len(record["test_coco_eval_bbox"]) == 12
    for key in ("test_PQ", "test_SQ", "test_RQ", "test_PQ_th", "test_PQ_st", "test_mask_AP"):
        assert 0.0 <= record[key] <= 1.0, key


def test_the_checkpoint_is_a_panoptic_model_with_its_stuff_classes(segm_run):
    config = read_checkpoint(segm_run / "checkpoint.pth")["config"]["model"]
    assert config["masks"] is True
    assert list(config["stuff_classes"]) == [2, 3, 4]  # two shapes (0, 1), then sky, ground, wall
    assert any(k.startswith("mask_head.") for k in read_checkpoint(segm_run / "checkpoint.pth")["model"])


def test_eval_prints_box_ap_mask_ap_and_pq(segm_run, panoptic_root, tmp_path):
    output = _run(["eval", "--resume", segm_run / "checkpoint.pth", "--coco-panoptic-path", panoptic_root,
                   "--batch-size", "2", "--no-progress", "--output-dir", tmp_path])
    assert "segm:" in output and "panoptic:" in output and "PQ" in output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["coco_eval_masks"]["stats"]) == 12
    record = _records(segm_run)[-1]
    assert metrics["panoptic"]["PQ"] == pytest.approx(record["test_PQ"], abs=1e-9)  # the same model, data, batching
    boxes_only = _run(["eval", "--resume", segm_run / "checkpoint.pth", "--coco-panoptic-path", panoptic_root,
                       "--no-masks", "--coco-path", panoptic_root, "--no-progress", "--output-dir", tmp_path / "b"])
    assert "panoptic:" not in boxes_only


def test_frozen_weights_with_masks_train_the_mask_head_alone(panoptic_root, tmp_path):
    detector = tmp_path / "det"
    _run(["train", "--coco-path", panoptic_root, *MODEL, *RUN, "--output-dir", detector])
    det_state = read_checkpoint(detector / "checkpoint.pth")["model"]
    out = tmp_path / "head"
    _run(["train", "--masks", "--coco-panoptic-path", panoptic_root, "--frozen-weights", detector / "checkpoint.pth",
          *MODEL, *RUN, "--num-classes", "5", "--output-dir", out])
    state = read_checkpoint(out / "checkpoint.pth")["model"]
    head = read_checkpoint(out / "checkpoint.pth")["model"]
    for key, value in det_state.items():
        if key.startswith(("class_embed.", "query_embed.")):
            continue
        assert torch.equal(state[f"detr.{key}"], value), key  # BatchNorm statistics included
    assert any(k.startswith("mask_head.") for k in head)


def test_init_from_a_detector_loads_it_under_detr_and_keeps_the_fresh_mask_head(tmp_path):
    """``train --masks --init DET.pth``: the detector's weights go under ``detr.``, the mask head starts fresh;
    a panoptic checkpoint's own mask head comes along."""
    from detr_core.checkpoint import model_payload, save_checkpoint
    from detr_core.config import ModelConfig
    from detr_core.registry import build_model
    from detr_core.training.run import load_initial_weights

    config = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=4, num_classes=3)
    detector = build_model(config)
    det_path = save_checkpoint(tmp_path / "det.pth", model_payload(detector, config))
    segm = build_model(config.replace(masks=True))
    head_before = {k: v.clone() for k, v in segm.state_dict().items() if not k.startswith("detr.")}
    load_initial_weights(segm, str(det_path))
    state = segm.state_dict()
    assert all(torch.equal(state[f"detr.{k}"], v) for k, v in detector.state_dict().items())
    assert all(torch.equal(state[k], v) for k, v in head_before.items())
    trained = build_model(config.replace(masks=True))
    segm_path = save_checkpoint(tmp_path / "segm.pth", model_payload(trained, trained.config))
    load_initial_weights(segm, str(segm_path))
    assert all(torch.equal(segm.state_dict()[k], v) for k, v in trained.state_dict().items())
