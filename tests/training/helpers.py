"""Tiny data and configs for the training / evaluation tests (a few 64-pixel shapes images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detr_core.data.shapes import ShapesParams, generate_shapes
from detr_core.training.train_config import resolve_train_config

TINY_MODEL = {"backbone": "small_cnn_gn", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2,
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


def make_small_coco(root: Path, sizes: tuple[tuple[int, int], ...] = ((64, 80), (96, 64), (72, 72), (64, 64), (80, 96)),
                    *, seed: int = 0) -> Path:
    """A COCO set of noise images of different sizes (h, w) with random boxes (ids 0..2); the last
    image has no annotations. Layout: ``root/val2017``, ``root/annotations/instances_val2017.json``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, anns = [], []
    for i, (h, w) in enumerate(sizes, 1):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "val2017" / f"{i:04d}.png")
        images.append({"id": i, "file_name": f"{i:04d}.png", "height": h, "width": w})
        for _ in range(0 if i == len(sizes) else int(rng.integers(1, 4))):
            bw, bh = float(rng.uniform(8, w / 2)), float(rng.uniform(8, h / 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(0, 3)),
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    cats = [{"id": k, "name": n} for k, n in enumerate(("a", "b", "c"))]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root
