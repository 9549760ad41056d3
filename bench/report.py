"""The benchmark's outputs: a markdown table (with where the time went), ``bench.json`` and a PNG chart:
latency vs AP with the Pareto front, or latency and × eager per row when AP means nothing (random weights)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.results import BenchReport, BenchResult
from detr_core.atomic import atomic_write

logger = logging.getLogger(__name__)

COLUMNS = ("format", "device", "precision", "status", "size MB", "AP", "AP50", "ΔAP", "max |Δ|",
           "p50 ms", "p90 ms", "img/s", "× eager", "GFLOP/s", "% peak", "pad ×")
#: A segmentation model's columns, after ΔAP: mask AP and PQ (points; – when the eval set has no panoptic truth).
SEGM_COLUMNS = ("mask AP", "PQ")
_SEGM_AT = COLUMNS.index("ΔAP") + 1


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def speedup(row: BenchResult, report: BenchReport) -> float | None:
    """p50 of eager on the row's device divided by the row's p50."""
    eager = report.row("eager", row.device)
    if row.latency is None or eager is None or eager.latency is None:
        return None
    return eager.latency.p50_ms / row.latency.p50_ms


def table_row(row: BenchResult, report: BenchReport) -> list[str]:
    lat = row.latency
    return [row.name, row.device, row.precision, row.status, _num(row.size_mb, ".1f"), _num(row.ap, ".2f"),
            _num(row.ap50, ".2f"), _num(row.delta_ap, "+.2f"), _num(row.max_abs_diff, ".1e"),
            _num(lat and lat.p50_ms, ".1f"), _num(lat and lat.p90_ms, ".1f"), _num(lat and lat.images_per_s, ".2f"),
            _num(speedup(row, report), ".2f"), _num(row.gflops, ".1f"), _peak_cell(row), _num(row.padded_ratio, ".2f")]


UNDER_MEASURED = "⚠️ peak under-measured"


def _peak_cell(row: BenchResult) -> str:
    """% peak; above 100 it is flagged, never printed as a fact."""
    cell = _num(row.peak_percent, ".1f")
    return f"{cell} {UNDER_MEASURED}" if row.peak_under_measured else cell


#: Set-up and measurement phases of a row, in the order they happen.
PHASES = ("export", "quantise", "compile", "load", "score", "timing", "padded")


def time_table(report: BenchReport) -> list[str]:
    """Where each row's seconds went, and the run's wall time."""
    rows = [r for r in report.rows if r.seconds]
    if not rows:
        return []
    lines = ["", "Where the time went (s):", "", "| row | " + " | ".join(PHASES) + " | total |",
             "|" + "|".join("---" for _ in range(len(PHASES) + 2)) + "|"]
    for row in rows:
        cells = [_num(row.seconds.get(p), ".1f") for p in PHASES]
        lines.append(f"| {row.name} ({row.device}) | " + " | ".join(cells) + f" | {sum(row.seconds.values()):.1f} |")
    machine, wall = report.setup.get("machine") or {}, report.setup.get("wall_seconds")
    lines.append("")
    lines.append(f"bench wall time {_num(wall, '.1f')} s; machine peaks {_num(machine.get('seconds'), '.1f')} s "
                 "(sizing + their calls among the rows)")
    return lines


def _peaks_text(values: dict, detail: dict | None = None) -> str:
    parts = []
    for precision, value in values.items():
        if value is None:
            continue
        extra = f" ({detail[precision]})" if detail and precision in detail else ""
        parts.append(f"{precision} {value:.0f}{extra}")
    return ", ".join(parts)


def header_lines(report: BenchReport) -> list[str]:
    """The machine above the table: CPU, its ISA flags and the load, the measured and theoretical peaks, the
    precisions it emulates, and the model's GFLOP."""
    setup, machine = report.setup, report.setup.get("machine") or {}
    if "cpu" not in setup:
        return []
    load = setup.get("load_average")
    lines = [f"{setup.get('cpu', '?')}, {setup.get('threads')} thread(s); ISA: {setup.get('isa', 'unknown')}; "
             f"load average at the end: {' '.join(f'{x:.2f}' for x in load) if load else 'unknown'}"]
    if machine:
        sizes = {p: f"{n}², {machine.get('calls', {}).get(p, 0)} calls" for p, n in machine.get("sizes", {}).items()}
        theory = {p: t["gflops"] for p, t in machine.get("theoretical", {}).items()}
        formulas = "; ".join(f"{p}: {t['formula']}" for p, t in machine.get("theoretical", {}).items())
        skipped = "; ".join(f"{p}: {why}" for p, why in machine.get("not_measured", {}).items())
        lines.append(f"measured GEMM peaks (median call, timed among the rows), GFLOP/s: "
                     f"{_peaks_text(machine.get('gflops', {}), sizes) or 'not measured'}"
                     + (f"; not measured: {skipped}" if skipped else ""))
        lines.append(f"theoretical peaks (ISA × clock), GFLOP/s: {_peaks_text(theory) or 'not derivable here'}"
                     + (f" [{formulas}]" if formulas else ""))
    emulated = [d for d in setup.get("capability", []) if d.get("native") is False and d["precision"] != "fp32"]
    if emulated:
        lines.append("emulated here: " + "; ".join(f"{d['precision']} on {d['runtime']} ({d['evidence']})"
                                                    for d in emulated))
    lines.append(f"model {_num(setup.get('model_gflop'), '.2f')} GFLOP per batch of {setup.get('batch_size')} "
                 "(FlopCounterMode); % peak = GFLOP/s ÷ the measured peak of the row's precision; pad × = p50 at "
                 "batch 2B with live masks ÷ p50 at batch B, same canvas")
    return [*lines, ""]


def has_masks(report: BenchReport) -> bool:
    return any(row.mask_ap is not None for row in report.rows)


def _with_segm(cells: list[str], extra: list[str], segm: bool) -> list[str]:
    return cells[:_SEGM_AT] + extra + cells[_SEGM_AT:] if segm else cells


def markdown_table(report: BenchReport) -> str:
    """The ultralytics-style table, one line per row (a segmentation model's with mask AP and PQ); failed
    rows carry their error below the table."""
    segm = has_masks(report)
    columns = _with_segm(list(COLUMNS), list(SEGM_COLUMNS), segm)
    lines = header_lines(report) + ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_with_segm(table_row(row, report), [_num(row.mask_ap, ".2f"), _num(row.pq, ".2f")],
                                           segm)) + " |" for row in report.rows]
    errors = [f"- ⏭️ {r.name} ({r.device}) skipped: {r.skipped}" for r in report.rows if r.skipped]
    errors += [f"- ❌ {r.name} ({r.device}): {r.error}" for r in report.rows if r.error and not r.skipped]
    errors += [f"- ❌ {reason}" for reason in report.failures if "failed:" not in reason]
    errors += [f"- {UNDER_MEASURED}: {r.name} ({r.device}) reached {r.peak_percent:.0f} % of the measured "
               f"{r.precision} peak, so that peak is too low (measured under other load, a kernel slower "
               "than the row's, or the row does fewer operations than counted: Winograd convolutions)"
               for r in report.rows if r.peak_under_measured]
    return "\n".join(lines + ([""] + errors if errors else []) + time_table(report))


def write_json(report: BenchReport, path: Path) -> Path:
    return atomic_write(path, lambda f: json.dump(report.to_dict(), f, indent=2, default=str), binary=False)


def ap_is_meaningful(report: BenchReport) -> bool:
    """False for random weights (``setup["random_weights"]``) or when no row reaches 1 AP point."""
    aps = [r.ap for r in report.rows if r.ap is not None]
    return not report.setup.get("random_weights") and bool(aps) and max(aps) >= 1.0


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, AP) points no other point beats on both: the fastest row at each AP, by latency."""
    front, best = [], float("-inf")
    for ms, ap in sorted(points, key=lambda p: (p[0], -p[1])):
        if ap > best:
            front.append((ms, ap))
            best = ap
    return front


def _plain_log_axis(axis) -> None:
    """A log axis labelled 1, 2, 5, 10, ... (never "2×10⁰")."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


_MARKERS = "osD^vP*Xh<>p"


def _ap_chart(fig, rows: list[BenchResult]) -> None:
    """Latency (log) vs AP, a hollow marker per row named in a legend beside the plot (labels never
    overlap, however many rows share an AP), and the Pareto front as a step line."""
    ax = fig.add_subplot()
    for i, r in enumerate(rows):
        ax.scatter(r.latency.p50_ms, r.ap, marker=_MARKERS[i % len(_MARKERS)], s=60, facecolors="none",
                   edgecolors=f"C{i % 10}", linewidths=1.5,
                   label=f"{r.name} ({r.device}, {r.precision}): {r.latency.p50_ms:.1f} ms, AP {r.ap:.2f}")
    front = pareto_front([(r.latency.p50_ms, r.ap) for r in rows])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.4", linestyle="--", linewidth=1,
            label="Pareto front (fastest row at each AP)")
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("p50 latency per batch (ms, log scale)")
    ax.set_ylabel("AP@[.5:.95] (points)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)


def _latency_chart(fig, rows: list[BenchResult], report: BenchReport) -> None:
    """AP means nothing (random weights): one bar per row, p50 latency (log) with × eager at its end."""
    ax = fig.add_subplot()
    rows = sorted(rows, key=lambda r: r.latency.p50_ms, reverse=True)
    labels = [f"{r.name} ({r.device}, {r.precision})" for r in rows]
    values = [r.latency.p50_ms for r in rows]
    ax.barh(range(len(rows)), values, color=[f"C{i % 10}" for i in range(len(rows))])
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for i, r in enumerate(rows):
        ratio = speedup(r, report)
        ax.text(values[i] * 1.03, i, f"{values[i]:.1f} ms" + (f", {ratio:.2f}× eager" if ratio else ""),
                va="center", fontsize=7)
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis)
    ax.set_xlim(min(values) / 1.5, max(values) * 4)
    ax.set_xlabel("p50 latency per batch (ms, log scale); AP not shown: random weights")


def chart_figure(report: BenchReport):
    """The figure of ``bench.png`` (None when no row has a latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meaningful = ap_is_meaningful(report)
    rows = [r for r in report.rows if r.ok and r.latency is not None and (r.ap is not None or not meaningful)]
    if not rows:
        return None
    fig = plt.figure(figsize=(8, 5) if meaningful else (8, 1.2 + 0.35 * len(rows)))
    if meaningful:
        _ap_chart(fig, rows)
    else:
        _latency_chart(fig, rows, report)
    fig.suptitle(report.setup.get("title", "detrtool bench"), fontsize=9)
    return fig


def write_chart(report: BenchReport, path: Path) -> Path | None:
    """``bench.png``: latency vs AP with the Pareto front, or latency and × eager per row for random weights."""
    import matplotlib.pyplot as plt

    fig = chart_figure(report)
    if fig is None:
        return None
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def write_report(report: BenchReport, output_dir: Path) -> dict[str, Path]:
    """``bench.md``, ``bench.json`` and ``bench.png`` (when any row has latency and AP) in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": output_dir / "bench.md", "json": write_json(report, output_dir / "bench.json")}
    atomic_write(written["markdown"], lambda f: f.write(markdown_table(report) + "\n"), binary=False)
    chart = write_chart(report, output_dir / "bench.png")
    if chart is not None:
        written["chart"] = chart
    return written
