"""``detrtool demo`` (``make demo``): the whole toolkit end to end on the synthetic shapes.

Generate the shapes, train the shapes default (kept when its checkpoint exists), evaluate it, export it
in every format of the table (validated against eager), bench every runtime row, print the table and
the wall time of each step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli.bench import (
    SHAPES_CANVAS,
    bench_options,
    default_checkpoint,
    echo_report,
    exit_on_failures,
    run_from_options,
)

logger = logging.getLogger(__name__)


class Steps:
    """Runs named steps and remembers their wall times."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        click.echo(f"== {name}")
        start = time.perf_counter()
        result = fn()
        self.times.append((name, time.perf_counter() - start))
        return result

    def summary(self) -> str:
        total = sum(t for _, t in self.times)
        parts = ", ".join(f"{name} {t / 60:.1f} min" for name, t in self.times)
        return f"demo wall time {total / 60:.1f} min ({parts})"


def generate() -> Path:
    from detr_core.data.shapes import ensure_default_shapes

    return ensure_default_shapes()


def train_default(epochs: int | None, retrain: bool) -> Path:
    from detr_core.training.run import train
    from detr_core.training.train_config import resolve_train_config

    checkpoint = default_checkpoint()
    if checkpoint.is_file() and not retrain:
        click.echo(f"using the trained shapes default {checkpoint} (--retrain to train again)")
        return checkpoint
    config = resolve_train_config({"epochs": epochs, "output_dir": str(checkpoint.parent)})
    return Path(train(config)) / "checkpoint.pth"


def evaluate(checkpoint: Path, output_dir: Path) -> None:
    from detr_core.training.eval_run import EvalConfig, evaluate_checkpoint

    result = evaluate_checkpoint(EvalConfig(str(checkpoint), output_dir=str(output_dir / "eval"), progress=False))
    click.echo(result.summary)


def export_all(checkpoint: Path, output_dir: Path, canvas: tuple[int, int]) -> None:
    from detr_core import load_checkpoint
    from exporters import FORMATS, export

    model = load_checkpoint(checkpoint)
    for name, fmt in FORMATS.items():
        result = export(model, name, output_dir / "exports" / f"model{fmt.suffix}", input_size=canvas, validate=True)
        click.echo(f"exported {name}: {result.path} ({result.export_seconds:.1f} s, validated against eager)")


@click.command()
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs (default: the shapes preset's).")
@click.option("--retrain", is_flag=True, help="Train again even when the shapes default's checkpoint exists.")
@bench_options
def demo(epochs: int | None, retrain: bool, **opts: Any) -> None:
    """Shapes -> train -> evaluate -> export every format -> bench every runtime -> the table."""
    steps, out = Steps(), Path(opts["output_dir"])
    canvas = opts["input_size"] or SHAPES_CANVAS
    steps.run("generate shapes", generate)
    checkpoint = steps.run("train the shapes default", lambda: train_default(epochs, retrain))
    steps.run("evaluate", lambda: evaluate(checkpoint, out))
    steps.run("export every format", lambda: export_all(checkpoint, out, canvas))
    report, written = steps.run("bench", lambda: _bench(checkpoint, opts))
    echo_report(report, written)
    click.echo(steps.summary())
    exit_on_failures(report)


def _bench(checkpoint: Path, opts: dict[str, Any]):
    from detr_core import load_checkpoint

    return run_from_options(load_checkpoint(checkpoint), f"detrtool demo: {checkpoint}", dict(opts))
