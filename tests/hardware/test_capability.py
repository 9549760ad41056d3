"""Capability decisions on faked CPUs: flag sets, runtime answers, ISA caps and probes, no /proc/cpuinfo."""

from __future__ import annotations

import pytest
import torch

from detr_core.hardware import Capability, CpuInfo, Probe, read_cpu
from detr_core.hardware.capability import torch_matmul_probe

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})  # AMD Zen 3, most laptops and cloud VMs
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}  # Cascade Lake
AVX512_BF16 = AVX512_NO_BF16 | {"avx512_bf16", "avx_vnni"}  # Zen 4 / Zen 5
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}  # Sapphire Rapids


def _cpu(flags, **kw) -> CpuInfo:
    return CpuInfo(name="test CPU", arch=kw.pop("arch", "x86_64"), flags=flags, **kw)


def _never(*_):
    raise AssertionError("the probe must not run where the flags tell")


def _capability(flags, *, answers=None, probes=None, **kw) -> Capability:
    return Capability(_cpu(flags, **kw), runtime_answers=answers or {},
                      probes=probes if probes is not None else {("bf16", "torch"): _never})


@pytest.mark.parametrize(("flags", "bf16", "int8_evidence"), [
    (AVX2_ONLY, False, "AVX2 u8s8"),
    (AVX512_NO_BF16, False, "AVX512-VNNI"),
    (AVX512_BF16, True, "AVX512-VNNI"),
    (AMX, True, "AMX-INT8"),
])
def test_decisions_follow_the_isa_flags(flags, bf16, int8_evidence):
    cap = _capability(flags)
    for runtime in ("torch", "onnxruntime", "openvino"):
        decision = cap.decide("bf16", runtime)
        assert decision.native is bf16, decision.line()
        assert ("lack" in decision.evidence) is (not bf16)
    int8 = cap.decide("int8", "onnxruntime")
    assert int8.native is True and int8_evidence in int8.evidence
    assert cap.decide("fp32", "torch").native is True
    assert cap.decide("fp16", "cuda").native is False  # no CUDA device


def test_amx_is_named_before_avx512_bf16():
    assert "AMX-BF16" in _capability(AMX).decide("bf16", "torch").evidence
    assert "AVX512-BF16" in _capability(AVX512_BF16).decide("bf16", "torch").evidence


def test_a_cpu_without_avx2_runs_no_native_int8():
    decision = _capability(frozenset({"sse4_2", "avx"})).decide("int8", "onnxruntime")
    assert decision.native is False and "AVX512-VNNI" in decision.evidence


def test_the_runtime_answer_is_combined_with_the_flags():
    # OpenVINO answers for itself; where it does not list BF16 the row is emulated even on a bf16 CPU
    cap = _capability(AVX512_BF16, answers={"openvino": frozenset({"FP32", "INT8"})})
    decision = cap.decide("bf16", "openvino")
    assert decision.native is False and "does not list BF16" in decision.evidence
    assert cap.decide("bf16", "torch").native is True  # torch does not ask OpenVINO
    # and where the flags say no, a runtime that lists BF16 does not make it native
    listed = _capability(AVX2_ONLY, answers={"openvino": frozenset({"BF16", "INT8"})}).decide("bf16", "openvino")
    assert listed.native is False and "lists BF16" in listed.evidence and "lack" in listed.evidence


def test_without_proc_cpuinfo_the_runtimes_and_the_probe_decide(tmp_path):
    cpu = read_cpu(tmp_path / "no-cpuinfo", cpufreq=tmp_path / "none", environ={})
    assert cpu.flags is None and cpu.isa_summary() == "unknown" and cpu.mhz is None
    calls = []

    def slow_probe():
        calls.append(1)
        return Probe(0.01, "bf16 at 0.01× fp32's rate")

    cap = Capability(cpu, runtime_answers={"openvino": frozenset({"FP32", "INT8"})},
                     probes={("bf16", "torch"): slow_probe})
    assert cap.decide("bf16", "torch").native is False and "probe" in cap.decide("bf16", "torch").evidence
    assert calls == [1]  # decided once, kept
    assert cap.decide("bf16", "openvino").native is False  # OpenVINO's own answer
    assert cap.decide("int8", "openvino").native is True
    unknown = cap.decide("int8", "onnxruntime")  # no flags, no answer, no probe: said, not guessed
    assert unknown.native is None and unknown.verdict == "unknown" and "no ISA flags" in unknown.evidence
    fast = Capability(cpu, probes={("bf16", "torch"): lambda: Probe(1.9, "bf16 at 1.9× fp32's rate")})
    assert fast.decide("bf16", "torch").native is True


def test_an_isa_cap_below_bf16_makes_torch_emulate():
    capped = _capability(AVX512_BF16, onednn_cap="AVX2")
    decision = capped.decide("bf16", "torch")
    assert decision.native is False and "ONEDNN_MAX_CPU_ISA=AVX2" in decision.evidence
    assert capped.decide("bf16", "openvino").native is True  # OpenVINO has its own oneDNN
    assert _capability(AVX512_BF16, onednn_cap="AVX512_CORE_AMX").decide("bf16", "torch").native is True
    probed = _capability(AVX512_BF16, onednn_cap="SOMETHING_NEW",
                         probes={("bf16", "torch"): lambda: Probe(0.1, "slow")}).decide("bf16", "torch")
    assert probed.native is False and "probe" in probed.evidence


def test_arm_features_line_is_read(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp bf16 i8mm\n"
                    "CPU implementer\t: 0x41\n\nprocessor\t: 1\nFeatures\t: fp\n")
    cpu = read_cpu(info, cpufreq=tmp_path / "none", environ={"ONEDNN_MAX_CPU_ISA": "avx2"})
    assert cpu.flags == frozenset({"fp", "asimd", "asimddp", "bf16", "i8mm"}) and cpu.onednn_cap == "AVX2"
    cap = Capability(CpuInfo(name="arm", arch="aarch64", flags=cpu.flags), probes={})
    assert cap.decide("bf16", "onnxruntime").native is True and cap.decide("int8", "onnxruntime").native is True


def test_x86_cpuinfo_name_clock_and_flags(tmp_path):
    info, freq = tmp_path / "cpuinfo", tmp_path / "max_freq"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC 7B13\n"
                    "cpu MHz\t\t: 2450.000\nflags\t\t: fpu avx avx2 fma\n")
    cpu = read_cpu(info, cpufreq=freq, environ={})
    assert (cpu.name, cpu.vendor, cpu.family, cpu.mhz) == ("AMD EPYC 7B13", "AuthenticAMD", 25, 2450.0)
    assert cpu.isa_summary() == "avx2 fma"
    freq.write_text("3500000\n")
    assert read_cpu(info, cpufreq=freq, environ={}).mhz == 3500.0


def test_the_probe_stays_within_its_budget():
    ticks = iter(range(1000))  # a clock at 1 s per reading: past the 0.5 s budget after the first pair
    probe = torch_matmul_probe(torch.bfloat16, size=32, clock=lambda: float(next(ticks)))
    assert probe.ratio > 0 and "32² matmul" in probe.detail
    assert next(ticks) == 2  # read once for the deadline, once after the first pair: one pair ran
