"""The benchmark's outputs: a markdown table, ``bench.json`` and a PNG chart of latency vs AP."""

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
            _num(speedup(row, report), ".2f"), _num(row.gflops, ".1f"), _num(row.peak_percent, ".1f"),
            _num(row.padded_ratio, ".2f")]


def header_lines(report: BenchReport) -> list[str]:
    """The machine above the table: CPU, threads, ISA flags, matmul peaks and the model's GFLOP."""
    setup, machine = report.setup, report.setup.get("machine") or {}
    if not machine:
        return []
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine.get("gflops", {}).items() if v is not None)
    flops = setup.get("model_gflop")
    return [f"{setup.get('cpu', '?')}, {machine.get('threads')} thread(s); ISA: {' '.join(machine.get('isa', []))}",
            f"matmul peak {machine.get('size')}² (GFLOP/s): {peaks or 'not measured'}; model "
            f"{_num(flops, '.2f')} GFLOP per batch of {setup.get('batch_size')} (FlopCounterMode); "
            "% peak = GFLOP/s ÷ the peak of the row's precision; pad × = p50 at batch 2B with live masks "
            "÷ p50 at batch B, same canvas", ""]


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
    return "\n".join(lines + ([""] + errors if errors else []))


def write_json(report: BenchReport, path: Path) -> Path:
    return atomic_write(path, lambda f: json.dump(report.to_dict(), f, indent=2, default=str), binary=False)


def write_chart(report: BenchReport, path: Path) -> Path | None:
    """Scatter of p50 latency (ms, log) vs AP, one labelled point per measured row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r.latency.p50_ms, r.ap, f"{r.name} ({r.device})") for r in report.rows
              if r.ok and r.latency is not None and r.ap is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for ms, ap, label in points:
        ax.scatter(ms, ap)
        ax.annotate(label, (ms, ap), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per batch (ms, log scale)")
    ax.set_ylabel("AP@[.5:.95] (points)")
    ax.set_title(report.setup.get("title", "detrtool bench: latency vs AP"), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
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
