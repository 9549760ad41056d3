"""Latency statistics, parity measures, verdicts and the report, on hand-made numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.accuracy import RawOutputs, agreement_percent, outputs_max_abs_diff
from bench.latency import measure_latency, peak_rss_mb, summarise, time_round_robin
from bench.report import COLUMNS, markdown_table, write_report
from bench.results import BenchReport, BenchResult


def test_summarise_percentiles_and_throughput():
    stats = summarise([10.0] * 9 + [100.0], batch_size=2, warmup=1, peak_rss=1.0, peak_cuda=None)
    assert stats.p50_ms == 10.0 and stats.p90_ms == pytest.approx(19.0) and stats.p99_ms == pytest.approx(91.9)
    assert stats.images_per_s == pytest.approx(200.0) and stats.runs == 10 and stats.min_ms == 10.0


def test_measure_latency_counts_calls():
    calls = []
    stats = measure_latency(lambda im, m: calls.append(1), torch.zeros(3, 3, 4, 4), torch.zeros(3, 4, 4),
                            warmup=2, runs=4)
    assert len(calls) == 6 and stats.runs == 4 and stats.batch_size == 3
    assert peak_rss_mb() > 0
    with pytest.raises(ValueError):
        measure_latency(lambda im, m: None, torch.zeros(1), torch.zeros(1), runs=0)


def _outputs(logits, boxes) -> RawOutputs:
    return RawOutputs(np.asarray(logits, np.float32), np.asarray(boxes, np.float32))


def test_time_round_robin_rotates_and_drops_warmup():
    order: list[str] = []
    times = time_round_robin({name: (lambda n=name: order.append(n)) for name in "abc"}, runs=2, warmup=1)
    assert order == list("abcbcacab")  # each first in turn
    assert {name: len(ms) for name, ms in times.items()} == {"a": 2, "b": 2, "c": 2}
    assert all(ms >= 0.0 for values in times.values() for ms in values)


def test_max_abs_diff_and_agreement():
    # one image, two queries, two classes + no-object; query 0 confidently class 0, query 1 no-object
    ref = _outputs([[[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]]], [[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]])
    same = _outputs(ref.logits + 1e-6, ref.boxes)
    sizes = torch.tensor([[100, 100]])
    assert outputs_max_abs_diff(ref, same) == pytest.approx(1e-6, abs=1e-7)
    assert agreement_percent(ref, same, sizes) == 100.0
    other_label = _outputs([[[0.0, 9.0, 0.0], [0.0, 0.0, 9.0]]], ref.boxes)
    assert agreement_percent(ref, other_label, sizes) == 0.0
    moved = _outputs(ref.logits, ref.boxes + np.array([0.1, 0, 0, 0], np.float32))
    assert agreement_percent(ref, moved, sizes) == 0.0
    nothing = _outputs([[[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]]], ref.boxes)
    assert agreement_percent(nothing, nothing, sizes) == 100.0


def _row(name="onnx", precision="fp32", **kw) -> BenchResult:
    row = BenchResult(name, name, "cpu", precision, precision != "fp32", ok=True, delta_ap=0.0, max_abs_diff=1e-6,
                      metrics={"AP": 0.5, "AP50": 0.8})
    for key, value in kw.items():
        setattr(row, key, value)
    return row


def test_judge_fp32_fails_on_map_drop_parity_or_error_lossy_never():
    checks = {"delta": _row(delta_ap=-0.3), "parity": _row(max_abs_diff=1e-2), "crash": _row(ok=False, error="boom"),
              "fine": _row(), "lossy": _row("onnx-int8-static", "int8", delta_ap=-5.0, max_abs_diff=0.5)}
    for row in checks.values():
        row.judge(max_map_drop=0.1, tolerance=1e-4)
    assert "ΔAP" in checks["delta"].failures[0] and "max |Δ|" in checks["parity"].failures[0]
    assert "boom" in checks["crash"].failures[0] and checks["crash"].status == "❌"
    assert checks["fine"].failures == [] and checks["lossy"].failures == [] and checks["lossy"].status == "✅"


def test_report_table_json_and_chart(tmp_path):
    from bench.latency import summarise

    eager = _row("eager", latency=summarise([100.0, 100.0], batch_size=1, warmup=0, peak_rss=None, peak_cuda=None))
    fast = _row("onnx", latency=summarise([50.0, 50.0], batch_size=1, warmup=0, peak_rss=None, peak_cuda=None),
                size_mb=12.3)
    broken = _row("torchscript", ok=False, error="RuntimeError: bad file")
    broken.judge(max_map_drop=0.1, tolerance=1e-4)
    report = BenchReport([eager, fast, broken], {"title": "t"})
    table = markdown_table(report)
    assert table.splitlines()[0] == "| " + " | ".join(COLUMNS) + " |"
    assert "| onnx | cpu | fp32 | ✅ | 12.3 | 50.00 | 80.00 | +0.00 | 1.0e-06 | 50.0 | 50.0 | 20.00 | 2.00 | – | – | – |" in table
    assert "❌ torchscript (cpu): RuntimeError: bad file" in table
    written = write_report(report, tmp_path)
    assert json.loads(written["json"].read_text())["failures"]
    assert written["chart"].stat().st_size > 0


def _peaks(**gflops):
    from bench.roofline import MachinePeaks

    return MachinePeaks(threads=2, cpu={"name": "X"}, sizes={k: 1024 for k, v in gflops.items() if v},
                        gflops=gflops, calls={k: 3 for k, v in gflops.items() if v},
                        theoretical={"fp32": {"gflops": 166.4, "formula": "16 lanes × 2 (FMA) × 2 × 2 core(s)"}},
                        not_measured={"int8": "not native here"})


def test_roofline_columns_skipped_rows_and_machine_header(tmp_path):
    from bench.roofline import roofline
    from bench.run import fill_roofline

    peaks = _peaks(fp32=100.0, bf16=400.0, int8=None)
    assert roofline(5e9, 100.0, "fp32", peaks) == pytest.approx((50.0, 50.0))  # 5 GFLOP in 0.1 s
    assert roofline(5e9, 50.0, "bf16", peaks) == pytest.approx((100.0, 25.0))
    assert roofline(5e9, 50.0, "int8", peaks)[1] is None and roofline(None, 50.0, "fp32", peaks) == (None, None)
    lat = summarise([100.0, 100.0], batch_size=1, warmup=0, peak_rss=None, peak_cuda=None)
    row, skipped = _row("onnx", latency=lat), _row("openvino-bf16", "bf16", ok=False)
    skipped.skipped = "this CPU has no bf16"
    row.padded_ratio = 1.5
    fill_roofline([row, skipped], 5e9, peaks)
    skipped.judge(max_map_drop=0.1, tolerance=1e-4)
    table = markdown_table(BenchReport([row, skipped], {"cpu": "X", "batch_size": 1, "model_gflop": 5.0,
                                                        "isa": "avx512f avx512_bf16", "load_average": [0.5, 0.4, 0.3],
                                                        "machine": peaks.to_dict()}))
    assert "| 100.0 | 100.0 | 10.00 | – | 50.0 | 50.0 | 1.50 |" in table  # p50, p90, img/s, × eager, GFLOP/s, % peak, pad ×
    assert "fp32 100 (1024², 3 calls), bf16 400 (1024², 3 calls)" in table and "int8: not native here" in table
    assert "ISA: avx512f avx512_bf16; load average at the end: 0.50 0.40 0.30" in table and "5.00 GFLOP" in table
    assert "theoretical peaks (ISA × clock), GFLOP/s: fp32 166 [fp32: 16 lanes" in table
    assert "⏭️ openvino-bf16 (cpu) skipped: this CPU has no bf16" in table
    assert skipped.status == "⏭️" and skipped.failures == []


def test_a_row_above_its_peak_is_flagged_in_markdown_and_json(tmp_path):
    from bench.run import fill_roofline

    fast = _row("onnx-int8-static", "int8", latency=summarise([10.0], batch_size=1, warmup=0, peak_rss=None,
                                                               peak_cuda=None))
    fine = _row("onnx", latency=summarise([100.0], batch_size=1, warmup=0, peak_rss=None, peak_cuda=None))
    fill_roofline([fast, fine], 5e9, _peaks(fp32=100.0, int8=200.0))  # int8: 500 GFLOP/s achieved, 250 %
    report = BenchReport([fast, fine], {"cpu": "X", "batch_size": 1, "model_gflop": 5.0})
    written = write_report(report, tmp_path)
    markdown = written["markdown"].read_text()
    assert "| 500.0 | 250.0 ⚠️ peak under-measured |" in markdown and "| 50.0 | 50.0 |" in markdown
    assert "⚠️ peak under-measured: onnx-int8-static (cpu) reached 250 % of the measured int8 peak" in markdown
    rows = {r["name"]: r for r in json.loads(written["json"].read_text())["rows"]}
    assert rows["onnx-int8-static"]["peak_under_measured"] is True and rows["onnx"]["peak_under_measured"] is False


def test_model_flops_count_matmuls_once():
    from bench.roofline import model_flops

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(16, 8)

        def forward(self, images, mask):
            return self.linear(images), mask

    flops = model_flops(TwoInputs(), torch.randn(3, 16), torch.zeros(3, dtype=torch.bool))
    assert flops == 2 * 3 * 16 * 8
