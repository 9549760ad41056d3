"""Training runs: exact resume, atomic checkpoints, fine-tuning, the NaN guard, guardrails, config."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from detr_core.checkpoint import read_checkpoint, save_checkpoint
from detr_core.training import engine
from detr_core.training import run as training
from detr_core.training.engine import NonFiniteLossError
from detr_core.training.run import TrainingError, train
from detr_core.training.train_config import SHAPES_PRESET, resolve_train_config
from tests.training.helpers import make_tiny_shapes, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")  # training tests: 1 thread is ~20x faster on a loaded 2-core box


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return make_tiny_shapes(tmp_path_factory.mktemp("shapes"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


@pytest.mark.parametrize("pretrain_epochs", [0, 1])
def test_resume_continues_exactly(shapes_root, tmp_path, monkeypatch, pretrain_epochs):
    """2 epochs in one go == 1 epoch, stop, resume, 1 epoch (cosine schedule with warm-up, seeded; with crop
    pre-training, the resumed run must not pre-train again)."""
    settings = {"epochs": 2, "lr_schedule": "cosine", "warmup_steps": 2, "seed": 3, "pretrain_epochs": pretrain_epochs,
                "pretrain_crop_size": 32}
    full = train(tiny_config(shapes_root, tmp_path / "full", **settings))

    real_append = training.append_log

    def stop_after_first_epoch(out, record):
        real_append(out, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "append_log", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(shapes_root, tmp_path / "cut", **settings))
    monkeypatch.setattr(training, "append_log", real_append)
    resumed = resolve_train_config({"resume": str(tmp_path / "cut" / "checkpoint.pth"), "progress": False})
    assert resumed.epochs == 2 and resumed.output_dir == str(tmp_path / "cut")
    train(resumed)

    a, b = _weights(full / "checkpoint.pth"), _weights(tmp_path / "cut" / "checkpoint.pth")
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    assert worst <= 1e-6
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    full_log = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert log[1]["train_loss"] == pytest.approx(full_log[1]["train_loss"], abs=1e-6)


def test_checkpoint_holds_the_training_state(shapes_root, tmp_path):
    out = train(tiny_config(shapes_root, tmp_path / "run", epochs=2, save_every=1))
    ckpt = read_checkpoint(out / "checkpoint.pth")
    assert {"model", "optimizer", "lr_scheduler", "epoch", "config", "rng"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["config"]["model"]["num_classes"] == 3
    assert sorted(p.name for p in out.glob("checkpoint_*.pth")) == ["checkpoint_0000.pth", "checkpoint_0001.pth"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "small_cnn_gn" and saved["epochs"] == 2
    assert resolve_train_config({}, saved).model.num_classes == 3  # config.yaml loads back with --config


_SAVER = """
import sys, torch
from detr_core.checkpoint import save_checkpoint
path = sys.argv[1]
for i in range(1, 1000):
    print("saving", i, flush=True)
    save_checkpoint(path, {"model": {"w": torch.full((6_000_000,), float(i))}, "epoch": i})
"""


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 0})
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    seen = 0
    while seen < 2:  # let one save complete, then kill in the middle of the next one
        line = proc.stdout.readline()
        assert line, "saver exited early"
        seen += line.startswith("saving")
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpt = read_checkpoint(path)
    epoch = int(ckpt["epoch"])
    assert epoch >= 1  # "saving 2" was printed: the save of epoch 1 had replaced the first file whole
    w = ckpt["model"]["w"]
    assert w.numel() == 6_000_000
    assert bool((w == float(epoch)).all())  # a whole file: old or new, never torn


def test_finetune_official_checkpoint_to_other_num_classes(shapes_root, tmp_path, tiny_checkpoint_path, caplog):
    config = tiny_config(shapes_root, tmp_path / "ft", tiny_model=False, init=str(tiny_checkpoint_path), nheads=4,
                         num_classes=3, num_queries=6)
    assert config.model.backbone == "resnet18" and config.model.hidden_dim == 64  # the checkpoint's architecture
    with caplog.at_level(logging.INFO):
        out = train(config)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "class_embed, query_embed" in dropped[0]
    state = _weights(out / "checkpoint.pth")
    assert state["class_embed.weight"].shape == (4, 64) and state["query_embed.weight"].shape == (6, 64)
    official = torch.load(tiny_checkpoint_path, weights_only=True)["model"]
    frozen = "backbone.0.body.conv1.weight"  # torchvision stem: frozen, so still the checkpoint's
    assert torch.equal(state[frozen], official[frozen])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(shapes_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine.weighted_total

    def nan_in_second_epoch(losses, weight_dict):
        calls["n"] += 1
        if calls["n"] > 2:  # 2 steps per epoch
            raise FloatingPointError("loss is not finite: ['loss_giou']")
        return real(losses, weight_dict)

    monkeypatch.setattr(engine, "weighted_total", nan_in_second_epoch)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 0: loss is not finite.*left untouched"):
        train(tiny_config(shapes_root, out, epochs=3))
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    assert not list(out.glob(".*.tmp"))


def test_guardrail_num_classes(shapes_root, tmp_path):
    with pytest.raises(TrainingError, match="num_classes=2"):
        train(tiny_config(shapes_root, tmp_path / "x", num_classes=2))


def test_guardrail_images_smaller_than_stride(shapes_root, tmp_path):
    with pytest.raises(TrainingError, match="smaller than the backbone stride 16"):
        train(tiny_config(shapes_root, tmp_path / "x", image_size=8))


def test_guardrail_empty_dataset(shapes_root, tmp_path):
    ann = json.loads((shapes_root / "annotations" / "instances_train2017.json").read_text())
    ann["images"], ann["annotations"] = [], []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(ann))
    config = tiny_config(shapes_root, tmp_path / "x", train_ann=str(empty),
                         train_images=str(shapes_root / "train2017"))
    with pytest.raises(ValueError, match="empty"):
        train(config)


def test_config_precedence_cli_over_yaml_over_preset():
    config = resolve_train_config({"epochs": 1, "hidden_dim": None}, {"epochs": 5, "batch_size": 3,
                                                                       "model": {"num_queries": 7}})
    assert config.epochs == 1 and config.batch_size == 3 and config.model.num_queries == 7
    assert config.model.backbone == SHAPES_PRESET["model"]["backbone"] and config.loss.eos_coef == 0.2
    reference = resolve_train_config({"coco_path": "/data/coco"})
    assert reference.model.backbone == "resnet50" and reference.lr_backbone == 1e-5 and reference.epochs == 300
    assert config.cache_images and not reference.cache_images  # decoded images kept in memory for the shapes only
    assert not resolve_train_config({"cache_images": False}).cache_images


def test_unknown_config_key_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown setting 'epoch'"):
        resolve_train_config({}, {"epoch": 3})


def test_new_run_in_an_old_folder_starts_a_new_log(shapes_root, tmp_path):
    out = tmp_path / "again"
    train(tiny_config(shapes_root, out, epochs=2))
    train(tiny_config(shapes_root, out, epochs=1))
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [0]
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl.old").read_text().splitlines()] == [0, 1]
