"""Training curves from ``OUTPUT_DIR/log.jsonl``: losses and COCO AP per epoch / per training minute."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from detr_core.atomic import atomic_write, make_folder, refuse_link  # noqa: E402
from detr_core.training.run_log import parse_lines  # noqa: E402

log = logging.getLogger(__name__)

LOSS_KEYS = ("loss", "loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")  # masks: segmentation runs
AP_KEYS = ("AP", "AP50", "AP75", "mask_AP", "PQ", "PQ_th", "PQ_st")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (a folder holding one is accepted); ValueError when absent/empty, or
    naming the file and line of a line that is not a JSON object. A torn last line (no final newline, as a
    kill in the middle of an append leaves it) is skipped with a warning."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: no training log (log.jsonl) here")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the training log ({' '.join(str(exc).split())})") from None
    records, bad = parse_lines(path)
    if bad and bad[-1] == len(text.splitlines()) and not text.endswith("\n"):
        log.warning("%s:%d: torn last line skipped (a run killed while writing it)", path, bad.pop())
    if bad:
        raise ValueError(f"{path}:{bad[0]}: not a JSON record (line {bad[0]} of the log)")
    if not records:
        raise ValueError(f"{path}: the log is empty")
    return records


def _series(records: list[dict], key: str, x_key: str) -> tuple[list[float], list[float]]:
    points = [(r[x_key], r[key]) for r in records if _number(r.get(key)) and _number(r.get(x_key))]
    return [p[0] for p in points], [p[1] for p in points]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_losses(records: list[dict], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in LOSS_KEYS:
        for split, style in (("train", "-"), ("test", "--")):
            xs, ys = _series(records, f"{split}_{key}", "epoch")
            if xs:
                ax.plot(xs, ys, style, label=f"{split} {key}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_ap(records: list[dict], out: Path, *, x_key: str = "epoch", target: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in AP_KEYS:
        xs, ys = _series(records, f"test_{key}", x_key)
        if xs:
            ax.plot(xs, ys, "o-", label=key, markersize=3)
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training minutes" if x_key == "train_minutes" else x_key)
    ax.set_ylabel("COCO metric (val)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    """Write ``fig`` as PNG at ``out`` atomically."""
    fig.tight_layout()
    try:
        atomic_write(out, lambda handle: fig.savefig(handle, format="png", dpi=100))
    finally:
        plt.close(fig)
    return out


def plot_run(output_dir: str | Path, dest: str | Path | None = None) -> list[Path]:
    """Draw ``loss.png``, ``ap.png`` (per epoch) and ``ap_minutes.png`` into ``dest`` (default: the run)."""
    records = read_log(output_dir)
    dest = Path(dest) if dest is not None else Path(output_dir)
    make_folder(dest)
    for name in ("loss.png", "ap.png", "ap_minutes.png"):
        refuse_link(dest / name)  # all checked before the first is drawn
    paths = [plot_losses(records, dest / "loss.png")]
    if any("test_AP" in r for r in records):
        paths.append(plot_ap(records, dest / "ap.png"))
        paths.append(plot_ap(records, dest / "ap_minutes.png", x_key="train_minutes"))
    return paths
