"""``detrtool bench``: latency and COCO-mAP parity of every runtime, one table."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from cli.options import FiniteFloatRange, RegularFile, dataset_options, parse_hw_option, pop_dataset_options
from cli.outputs import writable_dir
from detr_core.errors import first_line

logger = logging.getLogger(__name__)

SHAPES_CANVAS = (128, 128)
#: More intra-op threads than logical CPUs only slows every runtime (and a huge count aborts libgomp).
MAX_THREADS = os.cpu_count() or 1
DEFAULT_CANVAS = (800, 800)


def default_checkpoint() -> Path:
    """Where ``detrtool train`` (and ``detrtool demo``) put the shapes default's checkpoint."""
    from detr_core.training.train_config import SHAPES_PRESET

    return Path(SHAPES_PRESET["output_dir"]) / "checkpoint.pth"



def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def load_bench_model(resume: str | None, model_name: str | None, nheads: int | None):
    """The model to bench: a checkpoint, a registered model with random weights, or the shapes default."""
    import torch

    from detr_core import get_model, load_checkpoint

    if resume and model_name:
        raise click.UsageError("give --resume CKPT or --model NAME, not both")
    if model_name:
        torch.manual_seed(0)
        return get_model(model_name, **({"nheads": nheads} if nheads else {})).eval(), f"{model_name} (random weights)"
    path = Path(resume) if resume else default_checkpoint()
    if not path.exists():
        raise click.ClickException(f"no checkpoint at {path}: pass --resume CKPT or --model NAME, or train the "
                                   "shapes default first (detrtool train, or detrtool demo)")
    return load_checkpoint(path, **({"nheads": nheads} if nheads else {})), path.name


def bench_options(func):
    """The measurement options shared by ``bench`` and ``demo``."""
    options = [
        click.option("--formats", help="Comma list of families (eager, compile, torchscript, torch-export, onnx, "
                                       "openvino) or rows (e.g. onnx-int8-static, openvino-bf16); default all."),
        click.option("--devices", default="cpu", show_default=True, help="Comma list: cpu, cuda."),
        click.option("--input-size", callback=parse_hw_option, metavar="HxW",
                     help="Static canvas (default 128x128 on the shapes default, else 800x800)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS),
                     help=f"Intra-op threads (torch and ORT), 1..{MAX_THREADS} (this machine's logical CPUs)."),
        click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True),
        click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True),
        click.option("--max-map-drop", type=FiniteFloatRange(min=0), default=0.1, show_default=True,
                     help="Fail when an fp32 row's |ΔAP| (points) exceeds this."),
        click.option("--tolerance", type=FiniteFloatRange(min=0, min_open=True), default=1e-4, show_default=True,
                     help="Fail when an fp32 row's max |Δ| of raw outputs exceeds this."),
        click.option("--max-images", type=click.IntRange(min=1), help="Evaluate the first N val images only."),
        click.option("--calibration-images", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Training images that calibrate int8 static quantisation."),
        click.option("--interleave/--sequential", default=True, show_default=True,
                     help="Time rows round-robin (fair on a shared machine) or each alone after scoring."),
        click.option("--padded-batch/--no-padded-batch", default=True, show_default=True,
                     help="Also time every row at batch 2B with live masks against batch B (the 'pad ×' column)."),
        click.option("--peak-size", type=click.IntRange(min=0, max=8192), default=2048, show_default=True,
                     help="Largest GEMM size of the machine's peaks (each sized to ~50 ms a call, all within 10 s; "
                          "0: not measured)."),
        click.option("--output-dir", type=click.Path(file_okay=False), default="bench-results", show_default=True),
        click.option("--cache-dir", type=click.Path(file_okay=False), help="Exported artifacts cache."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_from_options(model, title: str, opts: dict[str, Any], *, random_weights: bool = False):
    """Build the eval set and config from parsed options, run, write the report; returns the report.
    ``random_weights``: AP means nothing, so the chart shows latency and × eager instead."""
    from bench.data import calibration_batches, load_eval_set
    from bench.report import write_report
    from bench.run import BenchConfig, run_bench
    from bench.runtimes import inductor_cache
    from detr_core.data.shapes import cache_dir
    from detr_core.evaluation.class_mapped import class_map_for

    source, pad_to = pop_dataset_options(opts)
    canvas = opts["input_size"] or pad_to or (SHAPES_CANVAS if source.is_default else DEFAULT_CANVAS)
    evalset = load_eval_set(source, canvas=canvas, batch_size=opts["batch_size"], max_images=opts["max_images"],
                            masks=hasattr(model, "mask_head"))  # a segmentation model: mask AP and PQ rows
    evalset.class_map = class_map_for(source.class_map, model, evalset.coco_gt)  # --class-map: scored in dataset ids
    config = BenchConfig(devices=_csv(opts["devices"]) or ("cpu",), formats=_csv(opts["formats"]),
                         threads=opts["threads"], warmup=opts["warmup"], runs=opts["runs"],
                         max_map_drop=opts["max_map_drop"], tolerance=opts["tolerance"],
                         interleave=opts["interleave"], padded=opts["padded_batch"], peak_size=opts["peak_size"])
    count = opts["calibration_images"]
    artifacts = Path(opts["cache_dir"] or cache_dir() / "bench-artifacts")
    with inductor_cache(artifacts):
        report = run_bench(model, evalset, config, cache_dir=artifacts,
                           calibration=lambda: calibration_batches(source, evalset, count), title=title,
                           on_row=lambda r: click.echo(f"{r.status} {r.name} ({r.device})"
                                                       f"{': ' + r.error if r.error else ''}"))
    report.setup["random_weights"] = random_weights
    return report, write_report(report, Path(opts["output_dir"]))


def echo_report(report, written: dict[str, Path]) -> None:
    from bench.report import markdown_table

    click.echo(markdown_table(report))
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))


def exit_on_failures(report) -> None:
    if report.failures:
        for reason in report.failures:
            click.echo(f"FAIL {reason}", err=True)
        raise click.ClickException(f"{len(report.failures)} benchmark check(s) failed (listed above; first: "
                                   f"{report.failures[0]})")


@click.command()
@click.option("--resume", type=RegularFile(dir_okay=True),
              help="Checkpoint to bench, or a Hugging Face DETR folder (default: the shapes default's "
                   "runs/shapes/checkpoint.pth).")
@click.option("--model", "model_name", help="A registered model with random weights, e.g. detr_resnet50 "
                                            "(latency and parity; its AP means nothing).")
@click.option("--nheads", type=click.IntRange(min=1), help="Attention heads (not stored in official checkpoints).")
@dataset_options
@bench_options
def bench(resume: str | None, model_name: str | None, nheads: int | None, **opts: Any) -> None:
    """Latency and COCO-mAP parity of eager, compile, TorchScript, torch.export, ONNX Runtime and OpenVINO
    rows, with the machine's matmul peaks and each row's share of them."""
    writable_dir(opts["output_dir"])
    model, title = load_bench_model(resume, model_name, nheads)
    try:
        report, written = run_from_options(model, f"detrtool bench: {title}", opts, random_weights=bool(model_name))
    except ValueError as exc:
        raise click.ClickException(first_line(exc)) from None
    echo_report(report, written)
    exit_on_failures(report)
