"""What a dynamic export costs in latency against a static one: same model, same input, ONNX Runtime and
torch.export, timed round-robin in one process.

    python -m bench.dynamic_cost [--model tiny|r50|both] [--runs N] [--threads T] [--output JSON]

``tiny``: the tiny reference checkpoint (``DETRTOOL_REFERENCE``) at 128x128; ``r50``: DETR-R50 with random
weights at 800x800. Each model is exported four times (ONNX dynamo and torch.export, static and
``dynamic=True``, the static canvas = the dynamic example) and every runtime is called once per round on
the same padded batch of 1 until ``--runs`` rounds are done; the medians and the dynamic/static ratios
are printed as a Markdown table and written to JSON with the load average before and after.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
from pathlib import Path

import torch

from bench.latency import time_round_robin
from bench.ort import session_options
from detr_core.atomic import atomic_write_text, temp_folder
from exporters import export, load_runtime
from exporters.validation_inputs import example_inputs

FORMATS = {"onnx": ("onnx", ".onnx"), "torch-export": ("torch-export", ".pt2")}


def load_model(name: str):
    """(model, canvas) of ``tiny`` (reference checkpoint, 128x128) or ``r50`` (random weights, 800x800)."""
    from detr_core import get_model, load_checkpoint

    if name == "tiny":
        root = Path(os.environ.get("DETRTOOL_REFERENCE", Path(__file__).resolve().parents[2] / "shared/reference"))
        return load_checkpoint(root / "tiny_checkpoint.pth", nheads=4).eval(), (128, 128)
    torch.manual_seed(0)
    return get_model("detr_resnet50").eval(), (800, 800)


def export_all(model, canvas: tuple[int, int], folder: Path, *, threads: int) -> dict[str, object]:
    """``{"onnx static": Runtime, "onnx dynamic": ..., "torch-export static": ..., ...}``."""
    runtimes = {}
    for fmt, (name, suffix) in FORMATS.items():
        for dynamic in (False, True):
            path = folder / f"{fmt}-{'dyn' if dynamic else 'static'}{suffix}"
            export(model, name, path, input_size=canvas, validate=False, dynamic=dynamic)
            options = {"session_options": session_options(threads=threads)} if fmt == "onnx" else {}
            runtimes[f"{fmt} {'dynamic' if dynamic else 'static'}"] = load_runtime(path, **options)
    return runtimes


def measure(name: str, *, runs: int, threads: int) -> dict:
    model, canvas = load_model(name)
    with temp_folder("dyncost") as folder:
        runtimes = export_all(model, canvas, Path(folder), threads=threads)
        inputs = example_inputs(batch_size=1, input_size=canvas, with_postprocess=False)
        load_before = os.getloadavg()
        # rotating order, 2 warm-up rounds dropped; ONNX Runtime sessions do not spin after a call, so they do
        # not slow the next runtime
        calls = {key: functools.partial(runtime, *inputs) for key, runtime in runtimes.items()}
        times = time_round_robin(calls, runs=runs, progress=True)
        load_after = os.getloadavg()
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {fmt: medians[f"{fmt} dynamic"] / medians[f"{fmt} static"] for fmt in FORMATS}
    return {"model": name, "canvas": list(canvas), "batch": 1, "runs": runs, "median_ms": medians,
            "dynamic_over_static": ratios, "load_before": load_before, "load_after": load_after}


def table(results: list[dict]) -> str:
    lines = ["| model, canvas | runtime | static p50 ms | dynamic p50 ms | dynamic / static |", "|---|---|---:|---:|---:|"]
    for r in results:
        for fmt in FORMATS:
            s, d = r["median_ms"][f"{fmt} static"], r["median_ms"][f"{fmt} dynamic"]
            lines.append(f"| {r['model']} {r['canvas'][0]}x{r['canvas'][1]} | {fmt} | {s:.1f} | {d:.1f} | "
                         f"{r['dynamic_over_static'][fmt]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "r50", "both"], default="tiny")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("bench/results/dynamic_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    names = ["tiny", "r50"] if args.model == "both" else [args.model]
    results = [measure(name, runs=args.runs, threads=args.threads) for name in names]
    setup = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
             "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps({"setup": setup, "results": results}, indent=1))
    print(table(results))
    print(f"load before/after: {[r['load_before'] for r in results]} / {[r['load_after'] for r in results]}")


if __name__ == "__main__":
    main()
