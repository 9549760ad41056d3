"""``--time-budget MIN``: the epoch count fitted to this machine, decided once from measured steps.

After the backbone pre-training (its minutes count against the budget), :func:`measure_costs` times a few
training steps on a *copy* of the model and optimizer and a few evaluation batches; the caller puts every
RNG state back afterwards, so the run itself is unchanged by the measurement. :func:`fit_epochs` turns the
costs into an epoch count (at least 1, at most the configured ``epochs``, which is the recipe's full
schedule). The run then records the decision in its config — ``epochs`` fixed, ``time_budget`` 0 — so a
rerun of the recorded ``config.yaml`` is bit-identical and ``--resume`` never decides again.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from detr_core.training.engine import Precision, _backward_step, compute_loss, to_device

MEASURED_STEPS = 6
MEASURED_EVAL_BATCHES = 3


@dataclass(frozen=True)
class Costs:
    """Seconds of one training step and of one evaluation batch, and how many of each an epoch has."""

    step_seconds: float
    eval_batch_seconds: float
    steps_per_epoch: int
    eval_batches: int

    def epoch_seconds(self, eval_every: int) -> float:
        """One epoch's training plus its share of the evaluation (every ``eval_every`` epochs)."""
        return self.steps_per_epoch * self.step_seconds + self.eval_batches * self.eval_batch_seconds / eval_every


@dataclass(frozen=True)
class BudgetDecision:
    """What the budget decided and from what (logged, and kept in the run's first log record)."""

    budget_minutes: float
    spent_seconds: float  # pre-training and the measurement itself
    costs: Costs
    epochs: int
    max_epochs: int

    def record(self) -> dict[str, Any]:
        return {"time_budget_minutes": self.budget_minutes, "time_budget_epochs": self.epochs,
                "time_budget_max_epochs": self.max_epochs, "time_budget_spent_seconds": self.spent_seconds,
                **{f"time_budget_{k}": v for k, v in asdict(self.costs).items()}}

    def line(self) -> str:
        c = self.costs
        return (f"--time-budget {self.budget_minutes:g} min: a step takes {c.step_seconds:.3f} s "
                f"({c.steps_per_epoch} a epoch), an evaluation batch {c.eval_batch_seconds:.3f} s "
                f"({c.eval_batches} a pass); {self.spent_seconds / 60:.2f} min already spent: "
                f"{self.epochs} epoch(s) (at most {self.max_epochs}), recorded in config.yaml")


def fit_epochs(budget_minutes: float, spent_seconds: float, costs: Costs, *, eval_every: int,
               max_epochs: int) -> int:
    """The most whole epochs that fit what is left of the budget; at least 1, at most ``max_epochs``."""
    per_epoch = costs.epoch_seconds(eval_every)
    left = budget_minutes * 60.0 - spent_seconds
    fitting = int(left // per_epoch) if per_epoch > 0 else max_epochs
    return max(1, min(max_epochs, fitting))


def _timed_batches(batches: Iterable, count: int, run: Callable[[Any], None],
                   clock: Callable[[], float]) -> float:
    """Mean seconds of ``run`` over up to ``count`` batches after a warm-up batch; with a single batch, that
    batch's own time (0 with none)."""
    times = []
    for batch in batches:
        start = clock()
        run(batch)
        times.append(clock() - start)
        if len(times) > count:
            break
    timed = times[1:] or times
    return sum(timed) / len(timed) if timed else 0.0


def measure_costs(model: nn.Module, criterion: nn.Module, train_batches: Iterable, val_batches: Iterable, *,
                  make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], precision: Precision,
                  device: torch.device, weight_dict: dict[str, float], max_norm: float, steps_per_epoch: int,
                  eval_batches: int, clock: Callable[[], float] = time.perf_counter) -> Costs:
    """Time training steps and evaluation batches on a copy of ``model`` (the run's model and optimizer are
    not touched; the caller restores the RNG states)."""
    twin = copy.deepcopy(model).train()
    optimizer = make_optimizer(twin)

    def step(batch: Any) -> None:
        total, _, problem = compute_loss(twin, criterion, to_device(batch, device), precision, weight_dict)
        if total is None:
            raise FloatingPointError(f"--time-budget: measuring a step failed: {problem}")
        _backward_step(total, optimizer, precision, max_norm)

    def forward(batch: Any) -> None:
        images, mask, _ = to_device(batch, device)
        with torch.no_grad(), precision.autocast():
            twin(images, mask)

    step_seconds = _timed_batches(train_batches, MEASURED_STEPS, step, clock)
    twin.eval()
    eval_seconds = _timed_batches(val_batches, MEASURED_EVAL_BATCHES, forward, clock)
    return Costs(step_seconds, eval_seconds, steps_per_epoch, eval_batches)
