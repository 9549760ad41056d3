"""Tiny data and configs for the training / evaluation tests (a few 64-pixel shapes images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detr_core.data.shapes import ShapesParams, generate_shapes
from detr_core.train_config import resolve_train_config

TINY_MODEL = {"backbone": "small_cnn", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2,
              "dim_feedforward": 64, "dropout": 0.0, "num_queries": 5}


def make_tiny_shapes(root: Path, *, train_count: int = 8, val_count: int = 4, image_size: int = 64,
                     seed: int = 0) -> Path:
    """A COCO-layout shapes set (3 classes, ids 0..2) under ``root``."""
    params = ShapesParams(seed=seed, image_size=image_size, train_count=train_count, val_count=val_count,
                          classes=("circle", "square", "triangle"), max_objects=3)
    return generate_shapes(root, params, progress=False)


def add_empty_val_image(root: Path) -> int:
    """Add a val image entry without annotations (reusing an existing file); returns its id."""
    ann_path = root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_path.read_text())
    first = data["images"][0]
    new_id = max(im["id"] for im in data["images"]) + 1
    data["images"].append({**first, "id": new_id})
    ann_path.write_text(json.dumps(data))
    return new_id


def tiny_config(data_root: Path, out: Path, *, tiny_model: bool = True, **overrides: Any):
    model = TINY_MODEL if tiny_model else {}
    cli = {"coco_path": str(data_root), "output_dir": str(out), "epochs": 1, "batch_size": 4, "num_workers": 0,
           "lr": 1e-3, "lr_backbone": 1e-3, "transforms": "shapes", "image_size": 64, "progress": False,
           "save_every": 0, **model, **overrides}
    return resolve_train_config(cli)
