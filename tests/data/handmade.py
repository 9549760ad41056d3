"""Hand-made datasets and checkpoints for the "data users bring" tests: a YOLO set with planted problems,
and a tiny official-format checkpoint with COCO's 91 classes (random weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from detr_core.config import ModelConfig
from detr_core.registry import build_model
from tests.data import write_image

#: (split, stem, (h, w), label-file text or None for no label file)
YOLO_IMAGES: tuple[tuple[str, str, tuple[int, int], str | None], ...] = (
    ("train", "t1", (60, 80), "0 0.5 0.5 0.5 0.5\n1 0.25 0.3 0.2 0.4\n"),
    ("train", "t2", (64, 64), "2 0.6 0.4 0.3 0.3\n"),
    ("train", "t3", (48, 72), "1 0.5 0.5 0.9 0.9\n0 0.2 0.2 0.1 0.1\n"),
    ("val", "v1", (60, 80), "0 0.4 0.5 0.3 0.6\n2 0.75 0.25 0.2 0.2\n"),
    ("val", "v2", (72, 56), "1 0.5 0.5 0.5 0.25\n"),
)
YOLO_NAMES = ("cat", "dog", "bird")


def write_yolo(root: Path, images=YOLO_IMAGES, *, names: object = YOLO_NAMES, value: int = 90) -> Path:
    """``root/data.yaml`` + ``images/{train,val}/*.png`` + ``labels/{train,val}/*.txt``."""
    for split, stem, (h, w), text in images:
        write_image(root / "images" / split / f"{stem}.png", h, w, value=value)
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    names_yaml = "[" + ", ".join(names) + "]" if isinstance(names, tuple) else str(names)
    (root / "data.yaml").write_text(f"train: images/train\nval: images/val\nnames: {names_yaml}\n")
    return root


def coco91_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """An official-format ``{"model": state_dict}`` of a tiny DETR (resnet18, hidden 64, 4 heads, 2 decoder
    layers, 12 queries) with COCO's 91 classes and random weights: names come from the COCO table."""
    torch.manual_seed(seed)
    config = ModelConfig(backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=1, dec_layers=2,
                         dim_feedforward=128, dropout=0.0, num_queries=12, num_classes=91)
    torch.save({"model": build_model(config).state_dict()}, path)
    return path
