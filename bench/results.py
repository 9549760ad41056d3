"""One measured row of the benchmark and the verdict on it.

A row is ``ok`` when it was built and measured; it *fails the run* when it is fp32 and either crashed,
moved AP (a segmentation model's: also mask AP or PQ) by more than ``max_map_drop`` points or moved raw
outputs (masks included) by more than ``tolerance``.
Lossy rows (bf16, fp16, int8) report their ΔAP and max |Δ| but never fail the run. A row the machine
cannot run (``skipped``, with the reason) never fails it either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.latency import LatencyStats


@dataclass
class BenchResult:
    name: str
    format: str
    device: str
    precision: str
    lossy: bool
    ok: bool = False
    error: str | None = None
    artifact: str | None = None
    size_mb: float | None = None
    export_seconds: float | None = None
    setup_seconds: float | None = None
    latency: LatencyStats | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    delta_ap: float | None = None
    max_abs_diff: float | None = None
    agreement: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None  # why this machine cannot run the row (e.g. no bf16)
    gflops: float | None = None  # model FLOPs / p50
    peak_percent: float | None = None  # gflops / the matmul peak of the row's precision
    padded_ratio: float | None = None  # p50 at batch 2B with live masks / p50 at batch B, same canvas
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went: export, quantise, compile,
    # load, score, timing, padded

    @property
    def peak_under_measured(self) -> bool:
        """Above 100 % of the measured peak: the peak, not the row, is wrong (a flag, never a fact)."""
        return self.peak_percent is not None and self.peak_percent > 100.0

    @property
    def ap(self) -> float | None:
        """AP@[.5:.95] in points (0..100)."""
        return 100.0 * self.metrics["AP"] if "AP" in self.metrics else None

    @property
    def ap50(self) -> float | None:
        return 100.0 * self.metrics["AP50"] if "AP50" in self.metrics else None

    @property
    def mask_ap(self) -> float | None:
        """Mask AP@[.5:.95] in points (a segmentation model's rows)."""
        return 100.0 * self.metrics["mask_AP"] if "mask_AP" in self.metrics else None

    @property
    def pq(self) -> float | None:
        """Panoptic quality in points (a segmentation model on a panoptic eval set)."""
        return 100.0 * self.metrics["PQ"] if "PQ" in self.metrics else None

    @property
    def status(self) -> str:
        if self.skipped:
            return "⏭️"
        return "✅" if self.ok and not self.failures else "❌"

    def judge(self, *, max_map_drop: float, tolerance: float) -> None:
        """Fill ``failures`` (reasons this row fails the run; lossy rows never do)."""
        self.failures = []
        if self.lossy or self.skipped:
            return
        if not self.ok:
            self.failures.append(f"{self.name} ({self.device}) failed: {self.error}")
            return
        if self.delta_ap is not None and abs(self.delta_ap) > max_map_drop:
            self.failures.append(f"{self.name} ({self.device}): |ΔAP| {abs(self.delta_ap):.3f} > {max_map_drop}")
        for key in ("mask_AP", "PQ"):  # a segmentation model's rows: the same bound on mask AP and PQ
            delta = self.notes.get(f"delta_{key}")
            if delta is not None and abs(delta) > max_map_drop:
                self.failures.append(f"{self.name} ({self.device}): |Δ{key}| {abs(delta):.3f} > {max_map_drop}")
        if self.max_abs_diff is not None and self.max_abs_diff > tolerance:
            self.failures.append(f"{self.name} ({self.device}): max |Δ| {self.max_abs_diff:.2e} > {tolerance:.0e}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(status=self.status, ap=self.ap, ap50=self.ap50, mask_ap=self.mask_ap, pq=self.pq,
                    peak_under_measured=self.peak_under_measured)
        return data


@dataclass
class BenchReport:
    """Every row plus what the run was (model, canvas, batch, threads, images, torch/ORT versions)."""

    rows: list[BenchResult]
    setup: dict[str, Any]

    @property
    def failures(self) -> list[str]:
        return [reason for row in self.rows for reason in row.failures]

    def row(self, name: str, device: str = "cpu") -> BenchResult | None:
        return next((r for r in self.rows if r.name == name and r.device == device), None)

    def to_dict(self) -> dict[str, Any]:
        return {"setup": self.setup, "rows": [r.to_dict() for r in self.rows], "failures": self.failures}
