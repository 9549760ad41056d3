"""Latency of one runtime on one input: warm-up, timed runs, percentiles, images/s and peak memory.

On CUDA every run is bracketed by ``torch.cuda.synchronize`` so that the time covers the kernels, not
only their launch. :func:`measure_interleaved` times several runtimes round-robin (one call of each per
round), so that load from other processes on a shared machine falls on every row alike and the ratios
between rows stay meaningful. Peak memory is the process's resident set high-water mark during the timed runs
(``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs where Linux allows it, else the
lifetime peak of ``resource.getrusage``) and, on CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from detr_core.errors import typed_line

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call (one call = one batch), images per second and peak memory in MB."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    images_per_s: float
    runs: int
    warmup: int
    batch_size: int
    peak_rss_mb: float | None
    peak_cuda_mb: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _status_mb(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status in MB (None where /proc is not readable or lacks it)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def current_rss_mb() -> float | None:
    """The resident set size now, in MB (None where /proc is not readable)."""
    return _status_mb("VmRSS")


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak_rss() -> bool:
    """Reset the resident-set high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """The resident-set high-water mark in MB (since the last reset, or of the process's life)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_calls(fn: Callable[[], object], *, runs: int, device: str = "cpu") -> list[float]:
    """Wall time of ``runs`` calls of ``fn`` in milliseconds, synchronising CUDA around each."""
    times = []
    for _ in range(runs):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def time_round_robin(calls: Mapping[str, Callable[[], object]], *, runs: int, warmup: int = 2, device: str = "cpu",
                     progress: bool = False) -> dict[str, list[float]]:
    """Milliseconds per call of each of ``calls`` (:func:`time_calls`), one call of each per round in a rotating
    order (each first in turn); the ``warmup`` first rounds are not kept. ``progress``: a bar over the rounds."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in tqdm(range(warmup + runs), desc="rounds", leave=False, disable=not progress):
        for name in names[i % len(names):] + names[:i % len(names)]:
            ms = time_calls(calls[name], runs=1, device=device)[0]
            if i >= warmup:
                times[name].append(ms)
    return times


def summarise(times_ms: list[float], *, batch_size: int, warmup: int, peak_rss: float | None,
              peak_cuda: float | None) -> LatencyStats:
    """Percentiles (linear interpolation) and throughput of the timed calls."""
    arr = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = (float(np.percentile(arr, q)) for q in (50, 90, 99))
    return LatencyStats(p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(arr.mean()), min_ms=float(arr.min()),
                        images_per_s=batch_size * 1000.0 / p50 if p50 > 0 else float("inf"), runs=len(times_ms),
                        warmup=warmup, batch_size=batch_size, peak_rss_mb=peak_rss, peak_cuda_mb=peak_cuda)


def measure_latency(runtime: Callable[[Tensor, Tensor], object], images: Tensor, mask: Tensor, *,
                    warmup: int = 5, runs: int = 30, device: str = "cpu") -> LatencyStats:
    """Run ``runtime(images, mask)`` ``warmup`` times untimed, then ``runs`` timed calls."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    cuda = device.startswith("cuda")
    if cuda:
        images, mask = images.to(device), mask.to(device)
    time_calls(lambda: runtime(images, mask), runs=warmup, device=device)
    reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = time_calls(lambda: runtime(images, mask), runs=runs, device=device)
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    stats = summarise(times, batch_size=int(images.shape[0]), warmup=warmup, peak_rss=peak_rss_mb(),
                      peak_cuda=peak_cuda)
    logger.debug("latency: p50 %.2f ms, p90 %.2f ms over %d runs", stats.p50_ms, stats.p90_ms, runs)
    return stats


@dataclass
class Timed:
    """A runtime to time in :func:`measure_interleaved`, with its input and device."""

    fn: Callable[[Tensor, Tensor], object]
    images: Tensor
    mask: Tensor
    device: str = "cpu"
    times_ms: list[float] | None = None
    error: str | None = None
    budget_s: float | None = None  # stop calling once the next call would pass this (warm-up included)
    spent_s: float = 0.0
    last_s: float = 0.0

    def call(self) -> None:
        self.fn(self.images, self.mask)

    def fits(self) -> bool:
        """Whether one more call fits the budget (judged by the last call's time)."""
        if self.budget_s is None:
            return True
        return self.spent_s + self.last_s <= self.budget_s


def _time_once(item: Timed) -> None:
    if not item.fits():
        return
    try:
        ms = time_calls(item.call, runs=1, device=item.device)[0]
        item.times_ms.append(ms)
        item.last_s = ms / 1000.0
        item.spent_s += item.last_s
    except Exception as exc:  # noqa: BLE001 - a runtime failing at timing is reported on its row
        item.error = typed_line(exc)


def measure_interleaved(items: dict[str, Timed], *, warmup: int = 5, runs: int = 30) -> dict[str, LatencyStats]:
    """Warm each item up, then ``runs`` rounds of one timed call per item; failed items get ``error``."""
    for item in items.values():
        item.images, item.mask, item.times_ms = item.images.to(item.device), item.mask.to(item.device), []
        for _ in range(warmup):
            _time_once(item)
        item.times_ms = []
    for _ in range(runs):
        for item in items.values():
            if item.error is None:
                _time_once(item)
    return {key: summarise(item.times_ms, batch_size=int(item.images.shape[0]), warmup=warmup, peak_rss=None,
                           peak_cuda=None)
            for key, item in items.items() if item.error is None and item.times_ms}
