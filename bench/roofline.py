"""What the machine can do, so that every row says how far it is from the limit.

- ISA flags that decide the speed of reduced precision (``/proc/cpuinfo``: AVX-512, AVX512-BF16,
  AVX512-VNNI, AMX-BF16/INT8, ...);
- matmul peaks on the benchmark's threads: ``torch.matmul`` of two ``n x n`` matrices in fp32 and bf16,
  and ``torch._int_mm`` in int8 (int32 accumulation) where this PyTorch has it on the CPU, best of
  ``repeats`` calls after one warm-up, in GFLOP/s (2 n^3 operations per call);
- the model's FLOPs at the benchmark's input (``torch.utils.flop_counter.FlopCounterMode`` on the eager
  forward: convolutions, matmuls, attention; elementwise ops are not counted), counted once per model
  and input size.

A row's achieved GFLOP/s is ``model FLOPs / p50``; its roofline percentage divides that by the peak of
its precision (fp32, bf16 or int8).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8", "amx_fp16")
PEAK_PRECISION = {"fp32": "fp32", "bf16": "bf16", "int8": "int8"}


@dataclass
class MachinePeaks:
    """Peak GFLOP/s per precision (None where not measurable) at ``threads`` and matrix size ``size``."""

    threads: int
    size: int
    isa: list[str] = field(default_factory=list)
    gflops: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in self.gflops.items() if v is not None)
        return (f"matmul peaks {self.size}² on {self.threads} thread(s), GFLOP/s: {peaks or 'not measured'}; "
                f"ISA: {' '.join(self.isa) or 'unknown'}")


def isa_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The flags of :data:`ISA_FLAGS` this CPU reports (empty where /proc/cpuinfo is unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    present = set(line.split(":", 1)[-1].split())
    return [flag for flag in ISA_FLAGS if flag in present]


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(dtype: torch.dtype, *, size: int = 2048, repeats: int = 3) -> float | None:
    """Best GFLOP/s of an ``size``² matmul in ``dtype`` (int8: ``torch._int_mm``; None if unsupported)."""
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        a, b = (torch.randint(-64, 64, (size, size), generator=gen, dtype=torch.int8) for _ in range(2))
        fn = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        a, b = (torch.randn(size, size, generator=gen).to(dtype) for _ in range(2))
        fn = lambda: torch.matmul(a, b)  # noqa: E731
    try:
        with torch.inference_mode():
            seconds = _best_seconds(fn, repeats)
    except RuntimeError:
        return None
    return 2.0 * size**3 / seconds / 1e9


def measure_peaks(*, size: int = 2048, repeats: int = 3) -> MachinePeaks:
    """ISA flags and fp32/bf16/int8 matmul peaks on the current torch thread count."""
    gflops = {name: matmul_gflops(dtype, size=size, repeats=repeats)
              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8))}
    return MachinePeaks(torch.get_num_threads(), size, isa_flags(), gflops)


def model_flops(model: nn.Module, images: Tensor, mask: Tensor) -> float:
    """FLOPs of one eager forward of ``model`` (an export wrapper) on ``images`` [B,3,H,W], ``mask`` [B,H,W]."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # parameters passed as module inputs (query embeddings) would make the counter's module tracker look
    # for a gradient function that no_grad never creates: count with gradients off on the parameters
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.no_grad(), counter:
            model(images, mask)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return float(counter.get_total_flops())


def roofline(flops: float | None, p50_ms: float | None, precision: str,
             peaks: MachinePeaks | None) -> tuple[float | None, float | None]:
    """(achieved GFLOP/s, % of the peak of ``precision``) of a row; None where unknown."""
    if not flops or not p50_ms:
        return None, None
    achieved = flops / (p50_ms / 1000.0) / 1e9
    peak = peaks.gflops.get(PEAK_PRECISION.get(precision, ""), None) if peaks else None
    return achieved, (100.0 * achieved / peak if peak else None)
