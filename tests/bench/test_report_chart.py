"""bench.png: no two labels overlap, the Pareto front is drawn, random weights give a latency chart."""

from __future__ import annotations

import itertools

import matplotlib
import pytest

from bench.latency import summarise
from bench.report import chart_figure, pareto_front, write_chart
from bench.results import BenchReport, BenchResult

matplotlib.use("Agg")


def _row(name: str, ms: float, ap: float, precision: str = "fp32") -> BenchResult:
    row = BenchResult(name, name.split("-")[0], "cpu", precision, precision != "fp32", ok=True)
    row.latency = summarise([ms], batch_size=1, warmup=0, peak_rss=None, peak_cuda=None)
    row.metrics = {"AP": ap / 100.0, "AP50": ap / 100.0}
    return row


def _rows_sharing_an_ap() -> list[BenchResult]:
    # every fp32 row at one AP and close latencies: the case that drew one blot of labels
    fp32 = [_row(n, ms, 61.8) for n, ms in (("eager", 2.1), ("compile", 1.9), ("torchscript", 2.0),
                                             ("torch-export", 2.05), ("onnx", 1.2), ("openvino", 1.25))]
    return [*fp32, _row("onnx-int8-static", 0.9, 60.9, "int8"), _row("openvino-int8", 0.95, 61.2, "int8"),
            _row("eager-amp", 1.5, 61.7, "bf16")]


def _texts(fig):
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip()]


def _assert_no_overlap(fig):
    texts = _texts(fig)
    assert len(texts) > 5
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


def test_labels_never_overlap_and_the_front_is_drawn(tmp_path):
    report = BenchReport(_rows_sharing_an_ap(), {"title": "shapes default"})
    fig = chart_figure(report)
    _assert_no_overlap(fig)
    labels = [t for t, _ in _texts(fig)]
    assert any(t.startswith("onnx (cpu, fp32): 1.2 ms, AP 61.80") for t in labels)
    assert "Pareto front (fastest row at each AP)" in labels
    ax = fig.axes[0]
    front = [line for line in ax.get_lines() if line.get_label().startswith("Pareto")][0]
    assert list(front.get_xdata()) == [0.9, 0.95, 1.2]  # int8-static, openvino-int8, onnx
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and all("×" not in t and "^" not in t for t in ticks), ticks  # plain numbers, not 2×10⁰
    assert write_chart(report, tmp_path / "bench.png").stat().st_size > 0


def test_random_weights_chart_latency_and_speedup_per_row(tmp_path):
    rows = _rows_sharing_an_ap()
    for row in rows:
        row.metrics = {"AP": 0.0, "AP50": 0.0}
    fig = chart_figure(BenchReport(rows, {"title": "detr_resnet50 (random weights)", "random_weights": True}))
    _assert_no_overlap(fig)
    labels = [t for t, _ in _texts(fig)]
    assert "onnx (cpu, fp32)" in labels and "1.2 ms, 1.75× eager" in labels
    assert "AP not shown: random weights" in fig.axes[0].get_xlabel()


def test_pareto_front_keeps_the_fastest_row_at_each_ap():
    assert pareto_front([(3.0, 60.0), (1.0, 50.0), (2.0, 60.0), (2.0, 55.0), (4.0, 59.0)]) == [(1.0, 50.0), (2.0, 60.0)]
    assert pareto_front([]) == []


@pytest.mark.parametrize("count", [1, 14])
def test_any_number_of_rows_keeps_labels_apart(count):
    rows = [_row(f"row{i}", 1.0 + 0.01 * i, 50.0) for i in range(count)]
    _assert_no_overlap(chart_figure(BenchReport(rows, {"title": "t"})))
