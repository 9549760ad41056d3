"""Convergence benchmark of the embedded default: `detrtool train` on the synthetic shapes, CPU.

    OMP_NUM_THREADS=1 python -m bench.train_shapes --output-dir runs/bench_shapes
    OMP_NUM_THREADS=2 python -m bench.train_shapes --masks --output-dir runs/bench_shapes_panoptic

Trains the default configuration (no dataset named), then writes ``bench/results/shapes_default.json``
(AP / AP50 per epoch against training minutes, throughput, machine) and the AP-vs-minutes curve
``bench/results/shapes_ap_minutes.png``. Target: AP50 >= 0.9 and AP >= 0.6 within 10 training minutes on
a 2-core CPU. ``--masks``: the panoptic default (``train --masks``): ``shapes_panoptic_default.json`` (PQ,
PQ things / stuff, mask AP and box AP per epoch) and ``shapes_panoptic_minutes.png``, within 15 minutes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import click
import torch

from detr_core.atomic import atomic_write
from detr_core.plotting import plot_ap, read_log
from detr_core.training.run import train
from detr_core.training.train_config import resolve_train_config

RESULTS = Path(__file__).resolve().parent / "results"


PANOPTIC_KEYS = ("PQ", "PQ_th", "PQ_st", "SQ", "RQ", "mask_AP")


def summarize(records: list[dict], *, minutes: float = 10.0, key: str = "AP") -> dict:
    curve = [{"epoch": r["epoch"], "train_minutes": round(r["train_minutes"], 3), "AP": r.get("test_AP"),
              "AP50": r.get("test_AP50"), **{k: r[f"test_{k}"] for k in PANOPTIC_KEYS if f"test_{k}" in r},
              "images_per_s": round(r["train_images_per_s"], 1)} for r in records]
    within = [c for c in curve if c["train_minutes"] <= minutes and c.get(key) is not None]
    best = max(within, key=lambda c: c[key], default=None)
    return {"curve": curve, f"best_within_{minutes:g}_min": best, "final": curve[-1],
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "processor": platform.processor() or platform.machine(),
                        "load_average_at_end": os.getloadavg()}}


@click.command()
@click.option("--output-dir", default="runs/bench_shapes", show_default=True)
@click.option("--epochs", type=int, help="Override the default's epochs.")
@click.option("--results", type=click.Path(file_okay=False), default=str(RESULTS), show_default=True)
@click.option("--masks", is_flag=True, help="The panoptic default (train --masks) instead of the detector.")
@click.option("--from-log", type=click.Path(file_okay=False), help="Summarise this finished run instead of training.")
def main(output_dir: str, epochs: int | None, results: str, masks: bool, from_log: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    trained_here = from_log is None
    if from_log is None:
        config = resolve_train_config({"output_dir": output_dir, "epochs": epochs, "progress": False, "masks": masks})
        from_log = str(train(config))
    records = read_log(from_log)
    dest = Path(results)
    dest.mkdir(parents=True, exist_ok=True)
    minutes, key, name = (15.0, "PQ", "shapes_panoptic") if masks else (10.0, "AP", "shapes")
    summary = summarize(records, minutes=minutes, key=key)
    if not trained_here:  # the load now says nothing about the run's
        summary["machine"].pop("load_average_at_end")
    atomic_write(dest / f"{name}_default.json", lambda f: json.dump(summary, f, indent=1), binary=False)
    plot_ap(records, dest / (f"{name}_minutes.png" if masks else "shapes_ap_minutes.png"), x_key="train_minutes",
            target=None if masks else 0.9)
    click.echo(json.dumps(summary[f"best_within_{minutes:g}_min"]))


if __name__ == "__main__":
    main()
