"""The bench on faked machines: emulated precisions are skipped unless named, peaks stay in their budget."""

from __future__ import annotations

import json
import logging
import time

import pytest
from click.testing import CliRunner

import bench.run
from bench.data import calibration_batches
from bench.roofline import PeakKernel
from bench.run import BenchConfig, run_bench
from bench.runtimes import RowSpec
from cli.main import cli
from detr_core.hardware import Capability, CpuInfo, Probe

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})


def no_bf16_machine() -> Capability:
    """A Zen 3 as the OS and OpenVINO describe it; its bf16 probe says 1/90 of fp32's rate."""
    return Capability(CpuInfo(name="AMD EPYC 7B13 (faked)", arch="x86_64", vendor="AuthenticAMD", family=25,
                              flags=AVX2_ONLY, mhz=2450.0),
                      runtime_answers={"openvino": frozenset({"FP32", "INT8"})},
                      probes={("bf16", "torch"): lambda: Probe(1 / 90, "256² matmul: bfloat16 at 0.011× fp32's rate")})


@pytest.fixture
def built(monkeypatch):
    """The names of every row whose runtime gets built."""
    names: list[str] = []
    original = RowSpec.build

    def recording(self, ctx, device):
        names.append(self.name)
        return original(self, ctx, device)

    monkeypatch.setattr(RowSpec, "build", recording)
    return names


def _bench(tiny_model, evalset, shapes_source, tmp_path, formats, **config):
    config = BenchConfig(formats=formats, threads=2, padded=False, **{"warmup": 0, "runs": 1, "peak_size": 0, **config})
    return run_bench(tiny_model, evalset, config, cache_dir=tmp_path,
                     calibration=lambda: calibration_batches(shapes_source, evalset, 2), capability=no_bf16_machine())


def test_a_machine_without_bf16_never_builds_an_amp_row(tiny_model, evalset, shapes_source, tmp_path, built):
    report = _bench(tiny_model, evalset, shapes_source, tmp_path, ("eager", "openvino"))
    assert built == ["eager", "openvino", "openvino-int8"]
    for name in ("eager-amp", "openvino-bf16"):
        row = report.row(name)
        assert row.status == "⏭️" and row.latency is None and row.failures == [], name
        assert "bf16 is emulated here, not native" in row.skipped and f"name {name} in --formats" in row.skipped
    assert "CPU flags lack AMX-BF16/AVX512-BF16/AVX-NE-CONVERT" in report.row("eager-amp").skipped
    assert "openvino does not list BF16" in report.row("openvino-bf16").skipped
    assert report.row("openvino-int8").ok and not report.failures
    emulated = {(d["precision"], d["runtime"]) for d in report.setup["capability"] if d["native"] is False}
    assert emulated == {("bf16", "torch"), ("bf16", "openvino")}


def test_naming_an_emulated_row_runs_it_after_one_warning(tiny_model, evalset, shapes_source, tmp_path, built,
                                                          caplog):
    with caplog.at_level(logging.WARNING, logger="bench.run"):
        report = _bench(tiny_model, evalset, shapes_source, tmp_path, ("eager", "eager-amp"))
    assert built == ["eager", "eager-amp"]
    assert report.row("eager-amp").ok and report.row("eager-amp").precision == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("eager-amp (cpu) runs although bf16 is emulated on this CPU (CPU flags lack")
    assert "expect about 90× the time of its fp32 row" in warnings[0]


def test_the_cli_skips_and_names_the_reason(tiny_checkpoint_path, shapes_root, tmp_path, monkeypatch, built):
    monkeypatch.setattr(bench.run, "machine_capability", no_bf16_machine)
    result = CliRunner().invoke(cli, ["bench", "--resume", str(tiny_checkpoint_path), "--nheads", "4",
                                      "--coco-path", str(shapes_root), "--input-size", "128x128", "--warmup", "0",
                                      "--runs", "1", "--no-padded-batch", "--peak-size", "256", "--formats", "eager",
                                      "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert built == ["eager"]
    assert "| eager-amp | cpu | bf16 | ⏭️ |" in result.output
    assert "⏭️ eager-amp (cpu) skipped: bf16 is emulated here, not native: CPU flags lack" in result.output
    assert "emulated here: bf16 on torch (CPU flags lack" in result.output
    assert "AMD EPYC 7B13 (faked), 2 thread(s); ISA: avx2 fma; load average at the end:" in result.output
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    machine = data["setup"]["machine"]
    assert set(machine["gflops"]) == {"fp32"} and machine["gflops"]["fp32"] > 0  # no bf16 'peak' timed
    assert machine["theoretical"]["fp32"]["gflops"] == pytest.approx(8 * 2 * 2 * data["setup"]["threads"] * 2.45)


def _slow_kernel(seconds: float) -> PeakKernel:
    def make(n: int):
        return lambda: time.sleep(seconds)

    return PeakKernel("fp32", "torch", make)


def test_the_peaks_keep_their_time_budget_with_a_slow_kernel(tiny_model, evalset, shapes_source, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(bench.run, "peak_kernels", lambda *a: [_slow_kernel(0.2)])
    report = _bench(tiny_model, evalset, shapes_source, tmp_path, ("eager",), runs=30, peak_size=256,
                    peak_budget_s=1.0)
    machine = report.setup["machine"]
    # sizing (a warm and two timed calls: 0.6 s) + the calls that fit the 0.4 s left, one call of slack at most
    assert machine["seconds"] <= 1.0 + 0.25, machine
    assert 1 <= machine["calls"]["fp32"] <= 2 and report.row("eager").latency.runs == 30
    assert machine["sizes"]["fp32"] == 256  # the kernel is slow: it stays at the smallest size
