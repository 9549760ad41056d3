"""The benchmark run: eager reference first, then every selected row × device, each measured the same way.

For every row: build (export through the format table, cached; load; compile or quantise), run the whole
eval set (COCO numbers, ΔAP vs eager, max |Δ| of raw outputs, detection agreement). Then every working
row is timed on the first prepared batch: by default round-robin (one call of each row per round, all
runtimes kept loaded), so that load from other processes falls on all rows alike; with
``interleave=False`` each row alone right after scoring (and released before the next one is built).
A row that raises becomes a failed (❌) row with its error line; the run goes on; a row the machine cannot
run (:class:`bench.runtimes.RowSkipped`) is reported as skipped (⏭️) with the reason.

What the machine runs natively is decided first (:mod:`detr_core.hardware.capability`): a row whose
precision this machine would emulate (bf16 without AVX512-BF16/AMX, int8 without int8 kernels) is
skipped (⏭️) with the evidence, never built, unless ``--formats`` names that row itself, which runs it after
one WARNING with the expected cost. The machine's peaks (:mod:`bench.roofline`: a GEMM per precision the
rows use and the machine runs natively, ONNX Runtime's for int8) are timed inside the round-robin with the
rows, within a 10 s budget; every timed row gets its achieved GFLOP/s and % of the peak of its precision
(over 100 %: flagged "peak under-measured"). Every row records where its time went (export, quantise,
compile, load, score, timing, padded). With ``padded=True`` every working row is also built at batch 2B (B the
bench's batch; static artifacts exported anew at that batch, int8 calibrated on batches of 2B) and timed
round-robin against its batch-B runtime on a batch of 2B real images with their own live masks: the
``padded_ratio`` p50(2B) / p50(B) says what a padded batch costs (2.0 = no gain from batching).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.accuracy import (
    EvalSet,
    RawOutputs,
    accuracy_metrics,
    agreement_percent,
    collect_outputs,
    outputs_max_abs_diff,
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
from bench.results import BenchReport, BenchResult
from bench.roofline import (
    PEAK_BUDGET_S,
    MachinePeaks,
    PeakKernel,
    finish_peaks,
    model_flops,
    peak_kernels,
    roofline,
    size_kernel,
    theoretical_gflops,
)
from bench.runtimes import BuildContext, LoadedRuntime, RowSkipped, RowSpec, eager_bench_runtime, select_rows
from detr_core.errors import typed_line
from detr_core.hardware import Capability, Decision, detect
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
    peak_size: int = 2048  # the largest GEMM size of the machine's peaks (0: not measured)
    peak_budget_s: float = PEAK_BUDGET_S  # all peaks together, sizing included


@dataclass
class Reference:
    """Eager fp32 on CPU over the eval set: the outputs and COCO numbers every row is compared with."""

    outputs: RawOutputs
    metrics: dict[str, float]


def machine_capability() -> Capability:
    """This machine's capability, with OpenVINO's own answer on bf16 / int8."""
    from exporters.openvino import cpu_capabilities

    return detect(runtime_answers={"openvino": cpu_capabilities()})


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS does not give them): timings are read beside them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_setup(model: nn.Module, evalset: EvalSet, config: BenchConfig, title: str, capability: Capability) -> dict:
    import onnxruntime
    import openvino

    return {"title": title, "canvas": list(evalset.canvas), "batch_size": evalset.batch_size,
            "images": len(evalset), "threads": torch.get_num_threads(), "warmup": config.warmup,
            "runs": config.runs, "interleaved": config.interleave, "parameters": sum(p.numel() for p in model.parameters()),
            "cpu": capability.cpu.name, "isa": capability.cpu.isa_summary(), "load_average": load_average(),
            "capability": [d.to_dict() for d in capability.decisions()],
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _fill_accuracy(result: BenchResult, runtime: LoadedRuntime, evalset: EvalSet, ref: Reference,
                   config: BenchConfig) -> None:
    outputs = collect_outputs(runtime, evalset)
    result.metrics = accuracy_metrics(outputs, evalset, backend=config.eval_backend)
    result.delta_ap = 100.0 * (result.metrics["AP"] - ref.metrics["AP"])
    for key in ("mask_AP", "PQ"):  # a segmentation model's rows: Δ mask AP and ΔPQ beside ΔAP
        if key in result.metrics and key in ref.metrics:
            result.notes[f"delta_{key}"] = 100.0 * (result.metrics[key] - ref.metrics[key])
    result.max_abs_diff = outputs_max_abs_diff(outputs, ref.outputs)
    result.agreement = agreement_percent(ref.outputs, outputs, evalset.orig_sizes)


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
        result.seconds.update(runtime.phases)
        if runtime.artifact is not None:
            result.artifact, result.size_mb = str(runtime.artifact.path), runtime.artifact.size_mb
            result.export_seconds = runtime.artifact.make_seconds
        start = time.perf_counter()
        _fill_accuracy(result, runtime, evalset, ref, config)
        result.seconds["score"] = time.perf_counter() - start
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
    start = time.perf_counter()
    try:
        stats = measure_latency(scored.runtime, *example, warmup=config.warmup, runs=config.runs,
                                device=scored.result.device)
        scored.result.latency = _with_memory(stats, scored.memory)
    except Exception as exc:  # noqa: BLE001
        _record_failure(scored.result, exc)
    scored.result.seconds["timing"] = time.perf_counter() - start


def _peak_items(kernels: list[PeakKernel], example: tuple[Tensor, Tensor], budget_s: float) -> dict[str, Timed]:
    """The peak kernels as round-robin items sharing ``budget_s`` evenly (their inputs are their own)."""
    share = budget_s / max(1, len(kernels))
    return {f"peak:{k.precision}": Timed(lambda _im, _m, fn=k.fn: fn(), *example, budget_s=share) for k in kernels}


def time_interleaved(rows: list[Scored], example: tuple[Tensor, Tensor], config: BenchConfig,
                     peaks: dict[str, Timed] | None = None) -> None:
    """Time every working row round-robin (one call of each per round), the peak kernels among them."""
    items: dict = {i: Timed(s.runtime, *example, device=s.result.device) for i, s in enumerate(rows) if s.runtime}
    items.update(peaks or {})
    stats = measure_interleaved(items, warmup=config.warmup, runs=config.runs)
    for i, item in items.items():
        if not isinstance(i, int):
            continue
        rows[i].result.seconds["timing"] = item.spent_s
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
    device, start = scored.result.device, time.perf_counter()
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
    scored.result.seconds["padded"] = time.perf_counter() - start


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
    outputs = collect_outputs(eager_bench_runtime(model, "cpu"), evalset)
    return Reference(outputs, accuracy_metrics(outputs, evalset, backend=backend))


def device_available(device: str) -> bool:
    return device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())


@dataclass(frozen=True)
class Planned:
    """A (row, device) pair, whether this machine runs its precision natively, and whether the user named
    the row itself in ``--formats`` (then it runs even where emulated)."""

    spec: RowSpec
    device: str
    decision: Decision
    named: bool

    @property
    def runs(self) -> bool:
        return self.decision.native is not False or self.named

    def skip_reason(self) -> str:
        return (f"{self.decision.precision} is emulated here, not native: {self.decision.evidence} "
                f"(name {self.spec.name} in --formats to run it anyway)")


def planned_rows(config: BenchConfig, capability: Capability) -> list[Planned]:
    """(row, device) pairs to measure: selected rows on the devices they support and that exist here,
    each with the capability decision on its precision.

    ``ValueError`` (one line) for a device name that is not cpu/cuda[:N], and when nothing is left to run
    (a bench that measured nothing must not exit 0 with an empty table)."""
    pairs, missing = [], []
    named = set(config.formats or ())
    for device in config.devices:
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"--devices: unknown device {device!r}; choose from cpu, cuda")
        if not device_available(device):
            logger.warning("device %s is not available here: its rows are skipped", device)
            missing.append(device)
            continue
        pairs += [Planned(spec, device, capability.decide(*spec.needs(device)), spec.name in named)
                  for spec in select_rows(config.formats) if device.split(":")[0] in spec.devices]
    if not pairs:
        why = f"device(s) {', '.join(missing)} not available here" if missing else \
            f"--formats {','.join(config.formats or ())} has no row for --devices {','.join(config.devices)}"
        raise ValueError(f"no benchmark row to run: {why}")
    return pairs


def skipped_row(plan: Planned) -> Scored:
    """The ⏭️ row of a precision this machine would emulate: never built."""
    spec = plan.spec
    result = BenchResult(spec.name, spec.family, plan.device, spec.precision_on(plan.device), spec.lossy)
    result.skipped = plan.skip_reason()
    logger.info("%s (%s) skipped: %s", spec.name, plan.device, result.skipped)
    return Scored(result, None, spec=spec)


def warn_emulated(plan: Planned, capability: Capability) -> None:
    """One WARNING for a row the user named although this machine emulates its precision, with the cost."""
    precision, runtime = plan.spec.needs(plan.device)
    probe = capability.probe(precision, runtime)
    cost = (f"expect about {1 / probe.ratio:.0f}× the time of its fp32 row ({probe.detail})"
            if probe is not None and 0 < probe.ratio < 1 else "expect it to run far slower than its fp32 row")
    logger.warning("%s (%s) runs although %s is emulated on this CPU (%s), because --formats names it: %s",
                   plan.spec.name, plan.device, precision, plan.decision.evidence, cost)


def measure_peaks_setup(scored: list[Scored], capability: Capability, config: BenchConfig,
                        threads: int) -> tuple[list[PeakKernel], MachinePeaks | None, float]:
    """The peak kernels sized for this machine, and the budget left for timing them; None when not measured."""
    if not config.peak_size:
        return [], None, 0.0
    precisions = {s.result.precision for s in scored if s.runtime is not None and s.result.device == "cpu"}
    kernels = peak_kernels(capability, precisions, config.threads)
    peaks = MachinePeaks(threads, capability.cpu.to_dict(), theoretical=theoretical_gflops(capability.cpu, threads))
    for precision in sorted(precisions - {k.precision for k in kernels}):
        peaks.not_measured[precision] = "not native here: its 'peak' would time the emulation"
    sizing = sum(size_kernel(k, max_size=config.peak_size) for k in kernels)
    peaks.seconds = sizing
    return kernels, peaks, max(0.0, config.peak_budget_s - sizing)


def run_bench(model: nn.Module, evalset: EvalSet, config: BenchConfig, *, cache_dir: Path,
              calibration: Callable[[], Iterable[tuple[Tensor, Tensor]]], title: str = "detrtool bench",
              on_row: Callable[[BenchResult], None] | None = None,
              capability: Capability | None = None) -> BenchReport:
    """Measure every planned row; ``on_row`` is called after each (progress). ``capability``: what this
    machine runs natively (default: detected)."""
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    capability = capability or machine_capability()
    model = model.eval().cpu()
    plans = planned_rows(config, capability)
    first = next(evalset.batches())
    example = (first.images, first.mask)
    flops = model_flops(wrap(model), *example)
    ref = reference_outputs(model, evalset, config.eval_backend)
    logger.info("eager reference: AP %.2f on %d images", 100 * ref.metrics["AP"], len(evalset))
    cache = ArtifactCache(Path(cache_dir), model, evalset.canvas, evalset.batch_size)
    ctx = BuildContext(model, cache, example, calibration, config.threads, config.ort_opt_level)
    padded = padded_context(ctx, evalset, cache_dir) if config.padded else None
    scored = []
    for plan in plans:
        if not plan.runs:
            scored.append(skipped_row(plan))
            continue
        if plan.decision.native is False:
            warn_emulated(plan, capability)
        logger.info("building and scoring %s on %s", plan.spec.name, plan.device)
        scored.append(score_row(plan.spec, plan.device, ctx, evalset, ref, config))
        if not config.interleave:
            time_sequential(scored[-1], example, config)
            if padded is not None:
                time_padded(scored[-1], example, padded, config)
            release(scored[-1])
    kernels, peaks, budget = measure_peaks_setup(scored, capability, config, torch.get_num_threads())
    peak_items = _peak_items(kernels, example, budget)
    if config.interleave:
        logger.info("timing %d rows and %d peak kernels round-robin (%d warm-up + %d runs each)", len(scored),
                    len(kernels), config.warmup, config.runs)
        time_interleaved(scored, example, config, peak_items)
        for item in scored if padded is not None else ():
            time_padded(item, example, padded, config)
    elif peak_items:
        measure_interleaved(peak_items, warmup=config.warmup, runs=config.runs)
    if peaks is not None:
        finish_peaks(kernels, {k.removeprefix("peak:"): item.times_ms for k, item in peak_items.items()}, peaks)
        peaks.seconds += sum(item.spent_s for item in peak_items.values())
        peaks.capability = [d.to_dict() for d in capability.decisions()]
    rows = [s.result for s in scored]
    fill_roofline(rows, flops, peaks)
    for row in rows:
        row.judge(max_map_drop=config.max_map_drop, tolerance=config.tolerance)
        if on_row is not None:
            on_row(row)
    setup = run_setup(model, evalset, config, title, capability)
    setup.update(machine=peaks.to_dict() if peaks else None, model_gflop=flops / 1e9, padded_batch=config.padded,
                 wall_seconds=time.perf_counter() - started)
    return BenchReport(rows, setup)
