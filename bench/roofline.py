"""The roofline of every row: the model's FLOPs, and the machine's peaks: measured with the kernels the rows use, under the rows' load, and derived from the ISA.

Measured (:class:`PeakKernel`): a square GEMM per precision this machine runs natively — fp32 and bf16
through ``torch.matmul`` (oneDNN, as the eager / compile / TorchScript rows), int8 through ONNX Runtime's
``MatMulInteger`` (MLAS's u8×s8 GEMM, as the ONNX int8 rows; OpenVINO's int8 rows use oneDNN's, of the
same instruction class). Each kernel is sized by doubling from 256 while its rate still grows (a call
at most ``TARGET_CALL_S``, the size at most ``max_size``), then timed *inside the benchmark's round-robin*, one call
per round like a row, so the peak and the rows see the same load; all peaks together, sizing included,
stay within ``budget_s`` (10 s): a kernel is called in a round only while its share of the budget allows.
Its GFLOP/s is taken at the median call, as the rows' p50.

The model's FLOPs (:func:`model_flops`) are counted once per model and input with
``torch.utils.flop_counter.FlopCounterMode`` on the eager forward (convolutions, matmuls, attention;
elementwise ops are not counted). A row's achieved GFLOP/s is ``model FLOPs / p50``, its % peak that
over the measured peak of its precision.

Derived (:func:`theoretical_gflops`): vector lanes × 2 (FMA) × FMA units × cores × GHz from the ISA flags and
the OS clock, where both are known; the formula is reported beside the figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from bench.latency import time_calls
from detr_core.hardware import Capability, CpuInfo

TARGET_CALL_S = 0.05
MIN_SIZE = 256
PEAK_BUDGET_S = 10.0
FMA_UNITS = 2  # two FMA pipes per core: Intel server cores and AMD Zen 2..5 (an assumption, stated in reports)


@dataclass
class PeakKernel:
    """A GEMM of one precision: ``make(n)`` returns a callable doing one ``n``² product (2 n³ operations)."""

    precision: str
    runtime: str
    make: Callable[[int], Callable[[], object]]
    size: int = 0
    fn: Callable[[], object] | None = None

    def flops(self) -> float:
        return 2.0 * self.size**3


def _torch_gemm(dtype: torch.dtype) -> Callable[[int], Callable[[], object]]:
    def make(n: int) -> Callable[[], object]:
        gen = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))

        def call() -> object:
            with torch.inference_mode():
                return torch.matmul(a, b)

        return call

    return make


def _ort_int8_gemm(threads: int | None) -> Callable[[int], Callable[[], object]]:
    """ONNX Runtime's ``MatMulInteger`` (uint8 activations × int8 weights -> int32), the QGEMM of its int8 rows."""

    def make(n: int) -> Callable[[], object]:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        from bench.ort import session_options

        rng = np.random.default_rng(0)
        weights = numpy_helper.from_array(rng.integers(-64, 64, (n, n), dtype=np.int8), "b")
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "peak",
                                  [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [weights])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        session = ort.InferenceSession(model.SerializeToString(), session_options(threads=threads),
                                       providers=["CPUExecutionProvider"])
        feed = {"a": rng.integers(0, 128, (n, n), dtype=np.uint8)}
        return lambda: session.run(None, feed)

    return make


def peak_kernels(capability: Capability, precisions: set[str], threads: int | None) -> list[PeakKernel]:
    """The kernels to measure: fp32 always, bf16 and int8 where a row of that precision runs and the
    machine runs it natively (an emulated kernel's 'peak' measures the emulation and takes minutes)."""
    kernels = [PeakKernel("fp32", "torch", _torch_gemm(torch.float32))]
    if "bf16" in precisions and capability.decide("bf16", "torch").native:
        kernels.append(PeakKernel("bf16", "torch", _torch_gemm(torch.bfloat16)))
    if "int8" in precisions and capability.decide("int8", "onnxruntime").native:
        kernels.append(PeakKernel("int8", "onnxruntime", _ort_int8_gemm(threads)))
    return kernels


def size_kernel(kernel: PeakKernel, *, max_size: int, target_s: float = TARGET_CALL_S) -> float:
    """Fix ``kernel.size``: from :data:`MIN_SIZE`, doubled (8x the work) while the rate still grows by a
    tenth or more, until a call (best of two) takes ``target_s`` or ``max_size`` is reached. A small
    matmul's time is mostly waking threads (on a loaded machine a 128² fp32 call took ~10 ms: a 0.4 GFLOP/s
    'peak'), so the size grows until the work dominates and the rate levels off. Returns the seconds spent."""
    start = time.perf_counter()
    n, previous = min(MIN_SIZE, max_size), 0.0
    while True:
        fn = kernel.make(n)
        fn()
        seconds = min(time_calls(fn, runs=2)) / 1000.0
        rate = 2.0 * n**3 / max(seconds, 1e-9)
        if seconds >= target_s or n >= max_size or rate < 1.1 * previous:
            break
        n, previous = min(max_size, 2 * n), rate
    kernel.size, kernel.fn = n, fn
    return time.perf_counter() - start


@dataclass
class MachinePeaks:
    """Peak GFLOP/s per precision: measured (median call, and best call) and theoretical, with the CPU."""

    threads: int
    cpu: dict = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    gflops: dict[str, float | None] = field(default_factory=dict)
    best_gflops: dict[str, float | None] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    theoretical: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    capability: list[dict] = field(default_factory=list)
    not_measured: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def theoretical_gflops(cpu: CpuInfo, threads: int) -> dict[str, dict]:
    """``{precision: {"gflops", "formula"}}`` from the ISA flags and the OS clock (x86 only; {} where unknown)."""
    if cpu.flags is None or not cpu.mhz or not cpu.x86:
        return {}
    flags, ghz = cpu.flags, cpu.mhz / 1000.0
    lanes = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    if lanes == 16 and cpu.vendor == "AuthenticAMD" and cpu.family == 25:
        lanes = 8  # Zen 4 runs 512-bit operations on 256-bit units
    fma = 2 if "fma" in flags else 1
    fp32_per_cycle = lanes * fma * FMA_UNITS
    where = f"× {threads} core(s) × {ghz:.2f} GHz (OS clock; {FMA_UNITS} FMA units assumed)"
    out = {"fp32": (fp32_per_cycle, f"{lanes} lanes × {fma} (FMA) × {FMA_UNITS}")}
    if "amx_bf16" in flags:
        out["bf16"] = (1024, "AMX-BF16 1024/cycle")
    elif "avx512_bf16" in flags:
        out["bf16"] = (2 * fp32_per_cycle, "2 × fp32 (VDPBF16PS)")
    if "amx_int8" in flags:
        out["int8"] = (2048, "AMX-INT8 2048/cycle")
    elif "avx512_vnni" in flags or "avx_vnni" in flags:
        out["int8"] = (4 * fp32_per_cycle, "4 × fp32 (VNNI)")
    elif "avx2" in flags:
        out["int8"] = (2 * fp32_per_cycle, "2 × fp32 (AVX2 u8s8)")
    return {p: {"gflops": per_cycle * threads * ghz, "formula": f"{text} {where}"}
            for p, (per_cycle, text) in out.items()}


def finish_peaks(kernels: list[PeakKernel], times_ms: dict[str, list[float]], peaks: MachinePeaks) -> None:
    """GFLOP/s of each kernel at its median and its best timed call."""
    for kernel in kernels:
        times = times_ms.get(kernel.precision) or []
        if not times:
            peaks.gflops[kernel.precision] = None
            peaks.not_measured[kernel.precision] = "no call fitted the peak budget"
            continue
        peaks.sizes[kernel.precision], peaks.calls[kernel.precision] = kernel.size, len(times)
        peaks.gflops[kernel.precision] = kernel.flops() / (float(np.median(times)) / 1000.0) / 1e9
        peaks.best_gflops[kernel.precision] = kernel.flops() / (min(times) / 1000.0) / 1e9


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
    """(achieved GFLOP/s, % of the measured peak of ``precision``) of a row; None where unknown."""
    if not flops or not p50_ms:
        return None, None
    achieved = flops / (p50_ms / 1000.0) / 1e9
    peak = peaks.gflops.get(precision) if peaks else None
    return achieved, (100.0 * achieved / peak if peak else None)
