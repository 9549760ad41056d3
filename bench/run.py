"""The benchmark run: eager reference first, then every selected row × device, each measured the same way.

For every row: build (export through the format table, cached; load; compile or quantise), run the whole
eval set (COCO numbers, ΔAP vs eager, max |Δ| of raw outputs, detection agreement). Then every working
row is timed on the first prepared batch: by default round-robin (one call of each row per round, all
runtimes kept loaded), so that load from other processes falls on all rows alike; with
``interleave=False`` each row alone right after scoring (and released before the next one is built).
A row that raises becomes a failed (❌) row with its error line; the run goes on; a row the machine cannot
run (:class:`bench.runtimes.RowSkipped`) is reported as skipped (⏭️) with the reason.

The machine is measured first (:mod:`bench.machine`: ISA flags, fp32/bf16/int8 matmul peaks on the
bench's threads) and the model's FLOPs counted once; every timed row gets its achieved GFLOP/s and % of
the peak of its precision. With ``padded=True`` every working row is also built at batch 2B (B the
bench's batch; static artifacts exported anew at that batch, int8 calibrated on batches of 2B) and timed
round-robin against its batch-B runtime on a batch of 2B real images with their own live masks: the
``padded_ratio`` p50(2B) / p50(B) says what a padded batch costs (2.0 = no gain from batching).
"""

from __future__ import annotations

import gc
import logging
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.accuracy import (
    EvalSet,
    RawOutputs,
    accuracy_metrics,
    collect_outputs,
    detection_agreement,
    max_abs_diff,
)
from bench.artifacts import ArtifactCache
from bench.latency import (
    LatencyStats,
    Timed,
    current_rss_mb,
    measure_interleaved,
    measure_latency,
    peak_rss_mb,
    reset_peak_rss,
)
from bench.machine import MachinePeaks, measure_peaks, model_flops, roofline
from bench.results import BenchReport, BenchResult
from bench.runtimes import BuildContext, LoadedRuntime, RowSkipped, RowSpec, eager_runtime, select_rows
from detr_core.errors import typed_line
from exporters.wrapper import wrap

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    devices: tuple[str, ...] = ("cpu",)
    formats: tuple[str, ...] | None = None
    threads: int | None = None
    warmup: int = 5
    runs: int = 30
    max_map_drop: float = 0.1
    tolerance: float = 1e-4
    eval_backend: str = "faster"
    ort_opt_level: str = "all"
    interleave: bool = True
    padded: bool = True
    padded_runs: int | None = None  # timed rounds of the padded-batch pair (default: runs)
    peak_size: int = 2048  # matmul size of the machine's peaks (0: not measured)


@dataclass
class Reference:
    """Eager fp32 on CPU over the eval set: the outputs and COCO numbers every row is compared with."""

    outputs: RawOutputs
    metrics: dict[str, float]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_setup(model: nn.Module, evalset: EvalSet, config: BenchConfig, title: str) -> dict:
    import onnxruntime
    import openvino

    return {"title": title, "canvas": list(evalset.canvas), "batch_size": evalset.batch_size,
            "images": len(evalset), "threads": torch.get_num_threads(), "warmup": config.warmup,
            "runs": config.runs, "interleaved": config.interleave, "parameters": sum(p.numel() for p in model.parameters()),
            "cpu": cpu_name(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _fill_accuracy(result: BenchResult, runtime: LoadedRuntime, evalset: EvalSet, ref: Reference,
                   config: BenchConfig) -> None:
    outputs = collect_outputs(runtime, evalset)
    result.metrics = accuracy_metrics(outputs, evalset, backend=config.eval_backend)
    result.delta_ap = 100.0 * (result.metrics["AP"] - ref.metrics["AP"])
    for key in ("mask_AP", "PQ"):  # a segmentation model's rows: Δ mask AP and ΔPQ beside ΔAP
        if key in result.metrics and key in ref.metrics:
            result.notes[f"delta_{key}"] = 100.0 * (result.metrics[key] - ref.metrics[key])
    result.max_abs_diff = max_abs_diff(outputs, ref.outputs)
    result.agreement = detection_agreement(ref.outputs, outputs, evalset.orig_sizes)


@dataclass
class Scored:
    """A row after build and accuracy: its result and, when it worked, the runtime (kept for timing)."""

    result: BenchResult
    runtime: LoadedRuntime | None
    memory: tuple[float | None, float | None] = (None, None)  # peak RSS growth, peak CUDA (MB)
    spec: RowSpec | None = None


def _memory_mark(device: str) -> float | None:
    reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return current_rss_mb()


def _memory_peak(device: str, baseline: float | None) -> tuple[float | None, float | None]:
    peak = peak_rss_mb()
    # Linux syncs per-thread RSS counters lazily, so the high-water mark can read a few pages under the
    # baseline taken right after the reset: growth is never negative.
    grown = max(0.0, peak - baseline) if peak is not None and baseline is not None else None
    return grown, (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None)


def score_row(spec: RowSpec, device: str, ctx: BuildContext, evalset: EvalSet, ref: Reference,
              config: BenchConfig) -> Scored:
    """Build one row and score it on the eval set; an exception becomes a failed row."""
    result = BenchResult(spec.name, spec.family, device, spec.precision_on(device), spec.lossy)
    baseline, runtime = _memory_mark(device), None
    try:
        runtime = spec.build(ctx, device)
        result.setup_seconds, result.notes = runtime.setup_seconds, dict(runtime.notes)
        if runtime.artifact is not None:
            result.artifact, result.size_mb = str(runtime.artifact.path), runtime.artifact.size_mb
            result.export_seconds = runtime.artifact.make_seconds
        _fill_accuracy(result, runtime, evalset, ref, config)
        result.ok = True
    except RowSkipped as exc:
        result.skipped, runtime = str(exc), None
        logger.warning("%s (%s) skipped: %s", result.name, device, exc)
    except Exception as exc:  # noqa: BLE001 - a failing row is a result, not a crash
        _record_failure(result, exc)
        runtime = None
    return Scored(result, runtime, _memory_peak(device, baseline), spec)


def _record_failure(result: BenchResult, exc: BaseException) -> None:
    result.ok, result.error = False, typed_line(exc)
    logger.warning("%s (%s) failed: %s", result.name, result.device, result.error)
    logger.debug("traceback", exc_info=True)


def _with_memory(stats: LatencyStats, memory: tuple[float | None, float | None]) -> LatencyStats:
    return replace(stats, peak_rss_mb=memory[0], peak_cuda_mb=memory[1])


def time_sequential(scored: Scored, example: tuple[Tensor, Tensor], config: BenchConfig) -> None:
    """Time one row alone, right after it was scored."""
    if scored.runtime is None:
        return
    try:
        stats = measure_latency(scored.runtime, *example, warmup=config.warmup, runs=config.runs,
                                device=scored.result.device)
        scored.result.latency = _with_memory(stats, scored.memory)
    except Exception as exc:  # noqa: BLE001
        _record_failure(scored.result, exc)


def time_interleaved(rows: list[Scored], example: tuple[Tensor, Tensor], config: BenchConfig) -> None:
    """Time every working row round-robin (one call of each per round)."""
    items = {i: Timed(s.runtime, *example, device=s.result.device) for i, s in enumerate(rows) if s.runtime}
    stats = measure_interleaved(items, warmup=config.warmup, runs=config.runs)
    for i, item in items.items():
        if item.error is not None:
            _record_failure(rows[i].result, RuntimeError(item.error))
        else:
            rows[i].result.latency = _with_memory(stats[i], rows[i].memory)


@dataclass
class Padded:
    """What the padded-batch timing needs: a build context at batch 2B and a batch of 2B real images."""

    ctx: BuildContext
    example: tuple[Tensor, Tensor]


def padded_context(ctx: BuildContext, evalset: EvalSet, cache_dir: Path) -> Padded:
    """Batch 2B: its artifact cache (static artifacts keyed by batch), calibration regrouped in pairs,
    and the first 2B val images (repeated when fewer) prepared with their own masks."""
    size = 2 * evalset.batch_size
    doubled = replace(evalset, batch_size=size)
    pixels = [evalset.images[i % len(evalset)] for i in range(size)]
    images, mask, _ = doubled.prepare(pixels)
    cache = ArtifactCache(Path(cache_dir), ctx.model, evalset.canvas, size)
    return Padded(replace(ctx, cache=cache, example=(images, mask), calibration=lambda: _pairs(ctx.calibration())),
                  (images, mask))


def _pairs(batches: Iterable[tuple[Tensor, Tensor]]) -> Iterable[tuple[Tensor, Tensor]]:
    """Consecutive batches concatenated two by two (the last one doubled when alone)."""
    items = list(batches)
    for i in range(0, len(items), 2):
        a, b = items[i], items[min(i + 1, len(items) - 1)]
        yield torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])


def time_padded(scored: Scored, example: tuple[Tensor, Tensor], padded: Padded, config: BenchConfig) -> None:
    """Build the row at batch 2B and time it round-robin against its batch-B runtime: ``padded_ratio``."""
    if scored.runtime is None or scored.spec is None:
        return
    device = scored.result.device
    try:
        doubled = scored.spec.build(padded.ctx, device)
        items = {"b": Timed(scored.runtime, *example, device=device), "2b": Timed(doubled, *padded.example, device=device)}
        stats = measure_interleaved(items, warmup=min(config.warmup, 2), runs=config.padded_runs or config.runs)
        if "b" in stats and "2b" in stats:
            scored.result.padded_ratio = stats["2b"].p50_ms / stats["b"].p50_ms
            scored.result.notes["padded_p50_ms"] = {"b": stats["b"].p50_ms, "2b": stats["2b"].p50_ms}
    except Exception as exc:  # noqa: BLE001 - the ratio is missing, the row stays measured
        scored.result.notes["padded_error"] = typed_line(exc)
        logger.warning("%s (%s): padded batch not measured: %s", scored.result.name, device, typed_line(exc))


def fill_roofline(rows: list[BenchResult], flops: float | None, peaks: MachinePeaks | None) -> None:
    for row in rows:
        if row.latency is not None and row.device == "cpu":
            row.gflops, row.peak_percent = roofline(flops, row.latency.p50_ms, row.precision, peaks)


def release(scored: Scored) -> None:
    device = scored.result.device
    scored.runtime = None
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def reference_outputs(model: nn.Module, evalset: EvalSet, backend: str) -> Reference:
    outputs = collect_outputs(eager_runtime(model, "cpu"), evalset)
    return Reference(outputs, accuracy_metrics(outputs, evalset, backend=backend))


def device_available(device: str) -> bool:
    return device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())


def planned_rows(config: BenchConfig) -> list[tuple[RowSpec, str]]:
    """(row, device) pairs to measure: selected rows on the devices they support and that exist here.

    ``ValueError`` (one line) for a device name that is not cpu/cuda[:N], and when nothing is left to run
    (a bench that measured nothing must not exit 0 with an empty table)."""
    pairs, missing = [], []
    for device in config.devices:
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"--devices: unknown device {device!r}; choose from cpu, cuda")
        if not device_available(device):
            logger.warning("device %s is not available here: its rows are skipped", device)
            missing.append(device)
            continue
        pairs += [(spec, device) for spec in select_rows(config.formats) if device.split(":")[0] in spec.devices]
    if not pairs:
        why = f"device(s) {', '.join(missing)} not available here" if missing else \
            f"--formats {','.join(config.formats or ())} has no row for --devices {','.join(config.devices)}"
        raise ValueError(f"no benchmark row to run: {why}")
    return pairs


def run_bench(model: nn.Module, evalset: EvalSet, config: BenchConfig, *, cache_dir: Path,
              calibration: Callable[[], Iterable[tuple[Tensor, Tensor]]], title: str = "detrtool bench",
              on_row: Callable[[BenchResult], None] | None = None) -> BenchReport:
    """Measure every planned row; ``on_row`` is called after each (progress)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    model = model.eval().cpu()
    pairs = planned_rows(config)
    peaks = measure_peaks(size=config.peak_size) if config.peak_size else None
    first = next(evalset.batches())
    example = (first.images, first.mask)
    flops = model_flops(wrap(model), *example)
    ref = reference_outputs(model, evalset, config.eval_backend)
    logger.info("eager reference: AP %.2f on %d images", 100 * ref.metrics["AP"], len(evalset))
    cache = ArtifactCache(Path(cache_dir), model, evalset.canvas, evalset.batch_size)
    ctx = BuildContext(model, cache, example, calibration, config.threads, config.ort_opt_level)
    padded = padded_context(ctx, evalset, cache_dir) if config.padded else None
    scored = []
    for spec, device in pairs:
        logger.info("building and scoring %s on %s", spec.name, device)
        scored.append(score_row(spec, device, ctx, evalset, ref, config))
        if not config.interleave:
            time_sequential(scored[-1], example, config)
            if padded is not None:
                time_padded(scored[-1], example, padded, config)
            release(scored[-1])
    if config.interleave:
        logger.info("timing %d rows round-robin (%d warm-up + %d runs each)", len(scored), config.warmup, config.runs)
        time_interleaved(scored, example, config)
        for item in scored if padded is not None else ():
            time_padded(item, example, padded, config)
    rows = [s.result for s in scored]
    fill_roofline(rows, flops, peaks)
    for row in rows:
        row.judge(max_map_drop=config.max_map_drop, tolerance=config.tolerance)
        if on_row is not None:
            on_row(row)
    setup = run_setup(model, evalset, config, title)
    setup.update(machine=peaks.to_dict() if peaks else None, model_gflop=flops / 1e9, padded_batch=config.padded)
    return BenchReport(rows, setup)
