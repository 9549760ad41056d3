"""--time-budget: the epoch count from measured costs, deterministic, recorded, never decided again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from detr_core.checkpoint import read_checkpoint
from detr_core.training import run as run_module
from detr_core.training.run import train
from detr_core.training.time_budget import Costs, fit_epochs, measure_costs
from detr_core.training.train_config import resolve_train_config
from tests.training.helpers import make_tiny_shapes, tiny_config


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_tiny_shapes(tmp_path_factory.mktemp("budget-shapes"))


def test_fit_epochs_from_costs():
    costs = Costs(step_seconds=0.5, eval_batch_seconds=0.2, steps_per_epoch=100, eval_batches=10)
    assert costs.epoch_seconds(eval_every=1) == pytest.approx(52.0)
    assert fit_epochs(10, 120.0, costs, eval_every=1, max_epochs=16) == 9  # 480 s left / 52 s
    assert fit_epochs(10, 120.0, costs, eval_every=2, max_epochs=16) == 9  # 480 / 51
    assert fit_epochs(100, 0.0, costs, eval_every=1, max_epochs=16) == 16  # capped by the recipe's schedule
    assert fit_epochs(1, 600.0, costs, eval_every=1, max_epochs=16) == 1  # nothing left: one epoch still runs
    assert fit_epochs(10, 120.0, costs, eval_every=1, max_epochs=16) == fit_epochs(10, 120.0, costs, eval_every=1,
                                                                                  max_epochs=16)


def test_measured_costs_follow_the_clock(shapes, tmp_path):
    """A faked clock that advances 0.25 s a reading: every step and evaluation batch measures 0.25 s."""
    from detr_core.losses import build_criterion
    from detr_core.training.distributed import DistInfo
    from detr_core.training.engine import Precision
    from detr_core.training.optim import build_optimizer
    from detr_core.training.run import build_data, build_run_model, resolve_num_classes

    config = tiny_config(shapes, tmp_path / "run")
    data = build_data(config, DistInfo())
    config = resolve_num_classes(config, data)
    model = build_run_model(config, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    criterion = build_criterion(config.loss, num_classes=config.model.num_classes, dec_layers=2, aux_loss=True)
    ticks = iter(0.25 * i for i in range(10_000))
    costs = measure_costs(model, criterion, data.train_loader, data.val_loader,
                          make_optimizer=lambda m: build_optimizer(m, lr=1e-3, lr_backbone=1e-3, weight_decay=1e-4),
                          precision=Precision(torch.device("cpu")), device=torch.device("cpu"),
                          weight_dict=criterion.weight_dict, max_norm=0.0, steps_per_epoch=len(data.train_loader),
                          eval_batches=len(data.val_loader), clock=lambda: next(ticks))
    assert costs.step_seconds == pytest.approx(0.25) and costs.eval_batch_seconds == pytest.approx(0.25)
    assert (costs.steps_per_epoch, costs.eval_batches) == (2, 1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # measured on a copy


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def test_the_decision_is_recorded_and_a_rerun_of_the_record_is_bit_identical(shapes, tmp_path, monkeypatch):
    decided = []
    real_fit = run_module.fit_epochs

    def fit(*args, **kwargs):
        decided.append(real_fit(*args, **kwargs))
        return 2  # what a 4-epoch schedule fitted to this machine gave; the real measurement still runs

    monkeypatch.setattr(run_module, "fit_epochs", fit)
    first = tmp_path / "budget"
    train(tiny_config(shapes, first, epochs=4, time_budget=10.0))
    assert len(decided) == 1 and 1 <= decided[0] <= 4
    recorded = yaml.safe_load((first / "config.yaml").read_text())
    assert recorded["epochs"] == 2 and recorded["time_budget"] == 0.0
    records = [json.loads(line) for line in (first / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0]["time_budget_epochs"] == 2 and records[0]["time_budget_max_epochs"] == 4
    assert records[0]["time_budget_step_seconds"] > 0 and "time_budget_epochs" not in records[1]
    stored = read_checkpoint(first / "checkpoint.pth")["config"]["run"]
    assert stored["epochs"] == 2 and stored["time_budget"] == 0.0

    monkeypatch.setattr(run_module, "measure_costs", _never)
    again = tmp_path / "rerun"
    train(resolve_train_config({**recorded, "output_dir": str(again)}))
    a, b = _weights(first / "checkpoint.pth"), _weights(again / "checkpoint.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _never(*_args, **_kwargs):
    raise AssertionError("the budget must not be measured again")


def test_resuming_keeps_the_recorded_epochs(shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "fit_epochs", lambda *a, **k: 3)
    out = tmp_path / "run"
    train(tiny_config(shapes, out, epochs=6, time_budget=10.0, save_every=1))
    monkeypatch.setattr(run_module, "measure_costs", _never)
    resumed = resolve_train_config({"resume": str(out / "checkpoint_0000.pth"), "output_dir": str(out),
                                    "time_budget": 10.0, "progress": False})
    assert resumed.epochs == 3
    train(resumed)
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
