"""Every runtime row on the tiny model: built, scored against eager and timed (CUDA rows skip without CUDA)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.data import calibration_batches
from bench.run import BenchConfig, machine_capability, run_bench
from bench.runtimes import family_names, row_specs, select_rows
from exporters.formats import FORMATS

FP32_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cpu_report(tiny_model, evalset, shapes_source, tmp_path_factory):
    config = BenchConfig(devices=("cpu",), warmup=1, runs=2, threads=2, padded=False, peak_size=256)
    return run_bench(tiny_model, evalset, config, cache_dir=tmp_path_factory.mktemp("artifacts"),
                     calibration=lambda: calibration_batches(shapes_source, evalset, 2))


def test_rows_follow_the_format_table():
    families = family_names()
    for name in FORMATS:
        assert name in families
        assert any(r.name == name and r.precision == "fp32" for r in row_specs())
    names = [r.name for r in row_specs()]
    assert len(names) == len(set(names))
    for variant in ("eager", "eager-amp", "compile", "compile-amp", "torchscript-frozen", "onnx-int8-static",
                    "onnx-int8-dynamic", "onnx-fp16", "openvino", "openvino-bf16", "openvino-int8"):
        assert variant in names


def test_select_rows_by_family_or_name():
    assert {r.name for r in select_rows(["onnx-int8-static"])} == {"onnx-int8-static"}
    assert {r.family for r in select_rows(["compile"])} == {"compile"}
    with pytest.raises(ValueError, match="unknown bench format"):
        select_rows(["tensorrt"])


def _emulated_here() -> set[str]:
    """The CPU rows whose precision this machine would emulate (skipped by the bench)."""
    capability = machine_capability()
    return {r.name for r in row_specs() if "cpu" in r.devices and capability.decide(*r.needs("cpu")).native is False}


def test_every_cpu_row_is_measured(cpu_report):
    expected = {r.name for r in row_specs() if "cpu" in r.devices}
    assert {r.name for r in cpu_report.rows} == expected
    emulated = _emulated_here()
    for row in cpu_report.rows:
        if row.name in emulated:
            assert row.skipped and row.status == "⏭️" and not row.failures and row.latency is None
            continue
        assert row.ok, f"{row.name}: {row.error}"
        assert row.status == "✅"
        assert row.latency is not None and row.latency.p50_ms > 0 and row.latency.runs == 2
        assert set(row.metrics) >= {"AP", "AP50"} and row.delta_ap is not None
        assert 0.0 <= row.agreement <= 100.0


def test_fp32_rows_match_eager(cpu_report):
    for row in cpu_report.rows:
        if row.precision == "fp32":
            assert row.max_abs_diff <= FP32_TOLERANCE, row.name
            assert abs(row.delta_ap) <= 0.1, row.name
            assert row.agreement == 100.0, row.name
    assert not cpu_report.failures


def test_lossy_rows_report_but_do_not_fail(cpu_report):
    lossy = [r for r in cpu_report.rows if r.lossy and not r.skipped]
    assert {r.precision for r in lossy} == {"bf16", "int8"} - {cpu_report.row(n).precision for n in _emulated_here()}
    for row in lossy:
        assert math.isfinite(row.max_abs_diff) and row.max_abs_diff < 1.0, row.name
        assert row.failures == []


def test_artifact_rows_carry_size_and_export_time(cpu_report):
    for row in cpu_report.rows:
        if row.format in FORMATS:
            assert row.size_mb > 0 and row.export_seconds >= 0, row.name
    int8 = cpu_report.row("onnx-int8-static")
    assert int8.size_mb < cpu_report.row("onnx").size_mb / 2
    assert cpu_report.row("openvino-int8").size_mb < cpu_report.row("openvino").size_mb / 2  # .xml + .bin
    assert cpu_report.row("compile").notes["compile_seconds"] > 0


def test_every_timed_row_has_its_roofline(cpu_report):
    machine = cpu_report.setup["machine"]
    assert machine["threads"] == 2 and machine["gflops"]["fp32"] > 0
    native = {d["precision"] for d in cpu_report.setup["capability"] if d["native"] and d["runtime"] != "openvino"}
    assert set(machine["gflops"]) == {"fp32"} | ({"bf16", "int8"} & native)  # emulated precisions: no 'peak'
    assert all(machine["gflops"][p] > 0 for p in machine["gflops"])
    assert cpu_report.setup["model_gflop"] > 0
    for row in cpu_report.rows:
        if row.latency is None:
            continue
        expected = cpu_report.setup["model_gflop"] / (row.latency.p50_ms / 1000.0)
        assert row.gflops == pytest.approx(expected), row.name
        peak = machine["gflops"].get(row.precision)
        if peak:
            assert row.peak_percent == pytest.approx(100.0 * expected / peak), row.name


def test_padded_batch_ratio_for_every_kind_of_row(tiny_model, evalset, shapes_source, tmp_path):
    rows = ("eager", "torchscript")  # a row without artifact, a static-batch artifact
    config = BenchConfig(formats=rows, warmup=1, runs=2, threads=2, padded=True, padded_runs=2, peak_size=0)
    report = run_bench(tiny_model, evalset, config, cache_dir=tmp_path,
                       calibration=lambda: calibration_batches(shapes_source, evalset, 2))
    for row in report.rows:
        assert row.padded_ratio is not None and row.padded_ratio > 0, (row.name, row.notes)
        assert set(row.notes["padded_p50_ms"]) == {"b", "2b"}
    # static artifacts were made anew at batch 2B = 4 (the bench's batch is 2), cached under their own keys
    from bench.artifacts import ArtifactCache

    for batch in (2, 4):
        key = ArtifactCache(tmp_path, tiny_model, evalset.canvas, batch).export_key("torchscript")
        assert (tmp_path / key / "model.ts").is_file()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_cuda_row_is_measured(tiny_model, evalset, shapes_source, tmp_path):
    config = BenchConfig(devices=("cuda",), warmup=1, runs=2)
    report = run_bench(tiny_model, evalset, config, cache_dir=tmp_path,
                       calibration=lambda: calibration_batches(shapes_source, evalset, 2))
    assert {r.name for r in report.rows} == {r.name for r in row_specs() if "cuda" in r.devices}
    for row in report.rows:
        assert row.ok, f"{row.name}: {row.error}"
        assert row.latency.peak_cuda_mb > 0
        if row.precision == "fp32":
            assert row.max_abs_diff <= 1e-3, row.name
    assert report.row("eager-amp", "cuda").precision == "fp16"
