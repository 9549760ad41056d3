"""Which precisions this machine runs natively, per runtime, decided once and with the evidence named.

A reduced precision is *native* when the runtime has kernels for it on this CPU: bf16 through AVX512-BF16,
AMX-BF16 or AVX-NE-CONVERT (Arm: the ``bf16`` feature); int8 through AMX-INT8, AVX512-VNNI, AVX-VNNI or
AVX2's u8×s8 multiply-adds (Arm: the dot-product instructions); fp16 on a CUDA device. Elsewhere the
runtime *emulates* it (torch's bf16 matmul on an AVX2-only CPU runs ~100× slower than fp32), and a
benchmark row or a training run in that precision measures the emulation, not the model.

Evidence, in order:

1. the ISA flags the OS reports (:mod:`detr_core.hardware.cpu`), with ``ONEDNN_MAX_CPU_ISA`` capping
   what torch's oneDNN kernels may use;
2. the runtime's own answer where it gives one (OpenVINO's ``OPTIMIZATION_CAPABILITIES``: passed in by the
   caller as ``runtime_answers``, so this module imports no runtime);
3. where neither can tell (no ``/proc/cpuinfo``, an unknown ISA cap), a micro-probe bounded to 0.5 s that
   times the reduced-precision kernel against fp32 (native when it reaches half of fp32's rate); with no
   probe for that runtime the answer is ``native=None``: unknown, said so, not guessed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from detr_core.hardware.cpu import CpuInfo, read_cpu

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
RUNTIMES = ("torch", "onnxruntime", "openvino", "executorch", "litert", "cuda")
PROBE_SECONDS = 0.5
NATIVE_RATIO = 0.5  # a probe calls a precision native when its kernel reaches this share of fp32's rate

#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) that still allow native bf16 kernels.
_ONEDNN_BF16 = frozenset({"AVX2_VNNI_2", "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX",
                          "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512",
                          "AVX10_2_512_AMX_2", "DEFAULT", "ALL"})
_ONEDNN_NO_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"})

#: x86 flags that give each precision native kernels, best first, with the name a reader knows.
_X86 = {"bf16": (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx_ne_convert", "AVX-NE-CONVERT")),
        "int8": (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
                 ("avx2", "AVX2 u8s8 multiply-adds (no VNNI)")),
        "fp16": (("amx_fp16", "AMX-FP16"), ("avx512_fp16", "AVX512-FP16"))}
_ARM = {"bf16": (("bf16", "Arm BF16"),), "int8": (("i8mm", "Arm I8MM"), ("asimddp", "Arm dot product")),
        "fp16": (("asimdhp", "Arm FP16 arithmetic"),)}

#: The runtime-answer name of each precision (OpenVINO's capability strings).
_ANSWER_NAME = {"bf16": "BF16", "int8": "INT8", "fp16": "FP16"}


@dataclass(frozen=True)
class Probe:
    """A micro-probe's result: the reduced-precision kernel's rate as a share of fp32's, and how it was timed."""

    ratio: float
    detail: str


@dataclass(frozen=True)
class Decision:
    """Whether ``runtime`` runs ``precision`` natively here (None: cannot tell), and why."""

    precision: str
    runtime: str
    native: bool | None
    evidence: str
    probe: Probe | None = None

    @property
    def verdict(self) -> str:
        return {True: "native", False: "emulated", None: "unknown"}[self.native]

    def line(self) -> str:
        return f"{self.precision} on {self.runtime}: {self.verdict} ({self.evidence})"

    def to_dict(self) -> dict:
        return {"precision": self.precision, "runtime": self.runtime, "native": self.native,
                "evidence": self.evidence, "probe_ratio": self.probe.ratio if self.probe else None}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def torch_matmul_probe(dtype: torch.dtype, *, size: int = 256, budget_s: float = PROBE_SECONDS,
                       clock: Callable[[], float] = time.perf_counter) -> Probe:
    """Best time of a ``size``² fp32 matmul against the same in ``dtype``, alternated until ``budget_s``
    would be passed (at most 5 pairs): the ratio of their rates."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    low_a, low_b = a.to(dtype), b.to(dtype)
    deadline = clock() + budget_s
    best = {"fp32": float("inf"), "low": float("inf")}
    with torch.inference_mode():
        for _ in range(5):
            best["fp32"] = min(best["fp32"], _timed(lambda: torch.matmul(a, b)))
            best["low"] = min(best["low"], _timed(lambda: torch.matmul(low_a, low_b)))
            if clock() + best["fp32"] + best["low"] > deadline:
                break
    ratio = best["fp32"] / best["low"] if best["low"] > 0 else float("inf")
    return Probe(ratio, f"{size}² matmul: {str(dtype).removeprefix('torch.')} at {ratio:.2g}× fp32's rate")


def _default_probes() -> dict[tuple[str, str], Callable[[], Probe]]:
    return {("bf16", "torch"): lambda: torch_matmul_probe(torch.bfloat16)}


@dataclass
class Capability:
    """Decisions for one machine: ``decide(precision, runtime)``; each is made once and kept.

    ``runtime_answers`` maps a runtime to the precisions it says it runs (None: it was not asked);
    ``probes`` maps (precision, runtime) to a bounded micro-probe, used only where flags cannot tell and
    to estimate the cost of a row the user asks for although it is emulated."""

    cpu: CpuInfo
    runtime_answers: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    probes: Mapping[tuple[str, str], Callable[[], Probe]] = field(default_factory=_default_probes)
    cuda: bool = False
    _decisions: dict[tuple[str, str], Decision] = field(default_factory=dict, repr=False)
    _probed: dict[tuple[str, str], Probe | None] = field(default_factory=dict, repr=False)

    def decide(self, precision: str, runtime: str) -> Decision:
        if precision not in PRECISIONS or runtime not in RUNTIMES:
            raise ValueError(f"no capability rule for {precision!r} on {runtime!r}")
        key = (precision, runtime)
        if key not in self._decisions:
            self._decisions[key] = self._decide(precision, runtime)
        return self._decisions[key]

    def probe(self, precision: str, runtime: str) -> Probe | None:
        """The bounded micro-probe of (precision, runtime), run once; None where there is none."""
        key = (precision, runtime)
        if key not in self._probed:
            fn = self.probes.get(key)
            self._probed[key] = fn() if fn is not None else None
        return self._probed[key]

    def decisions(self) -> list[Decision]:
        """Every decision made so far (what a report prints)."""
        return list(self._decisions.values())

    def _decide(self, precision: str, runtime: str) -> Decision:
        if precision == "fp32":
            return Decision(precision, runtime, True, "fp32 kernels everywhere")
        if runtime == "cuda":
            return Decision(precision, runtime, self.cuda and precision in ("fp16", "bf16"),
                            "CUDA device present" if self.cuda else "no CUDA device")
        flags = self._from_flags(precision, runtime)
        answer = self._from_runtime(precision, runtime)
        if flags is not None and answer is not None:
            native = flags.native and answer.native
            return Decision(precision, runtime, native, f"{flags.evidence}; {answer.evidence}")
        known = flags or answer
        if known is not None:
            return known
        probe = self.probe(precision, runtime)
        if probe is None:
            return Decision(precision, runtime, None, "no ISA flags from the OS, no answer from the runtime, no probe")
        return Decision(precision, runtime, probe.ratio >= NATIVE_RATIO,
                        f"probe: {probe.detail} (native ≥ {NATIVE_RATIO})", probe)

    def _from_flags(self, precision: str, runtime: str) -> Decision | None:
        cpu = self.cpu
        if cpu.flags is None:
            return None
        table = _X86 if cpu.x86 else _ARM
        hit = next(((flag, name) for flag, name in table.get(precision, ()) if flag in cpu.flags), None)
        if hit is None:
            wanted = "/".join(name for _, name in table.get(precision, ())) or "no known instruction"
            return Decision(precision, runtime, False, f"CPU flags lack {wanted}")
        if runtime == "torch" and precision == "bf16" and cpu.onednn_cap:
            if cpu.onednn_cap in _ONEDNN_NO_BF16:
                return Decision(precision, runtime, False,
                                f"CPU has {hit[1]} but ONEDNN_MAX_CPU_ISA={cpu.onednn_cap} keeps oneDNN below it")
            if cpu.onednn_cap not in _ONEDNN_BF16:
                return None  # a cap this module does not know: let the probe tell
        return Decision(precision, runtime, True, f"CPU flag {hit[0]} ({hit[1]})")

    def _from_runtime(self, precision: str, runtime: str) -> Decision | None:
        listed = self.runtime_answers.get(runtime)
        if listed is None:
            return None
        name = _ANSWER_NAME.get(precision, precision.upper())
        native = name in listed
        return Decision(precision, runtime, native,
                        f"{runtime} {'lists' if native else 'does not list'} {name} among its CPU capabilities")


def detect(*, runtime_answers: Mapping[str, frozenset[str] | None] | None = None) -> Capability:
    """This machine's capability: its CPU as the OS reports it, and whether a CUDA device is present."""
    return Capability(read_cpu(), runtime_answers=dict(runtime_answers or {}), cuda=torch.cuda.is_available())
