"""A genuinely trained tiny DETR for tests that compare detection sets: it memorises a handful of
synthetic shapes images in a few seconds on CPU and then detects their objects with high scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from detr_core.checkpoint import model_payload, save_checkpoint
from detr_core.config import LossConfig, ModelConfig
from detr_core.data import (
    CocoDetection,
    ShapesParams,
    generate_shapes,
    make_collate,
    make_shapes_eval_transforms,
)
from detr_core.losses import build_criterion, weighted_total
from detr_core.registry import build_model

IMAGE_SIZE = 96
PARAMS = ShapesParams(seed=7, image_size=IMAGE_SIZE, train_count=8, val_count=1,
                      min_objects=1, max_objects=3, min_scale=0.2, max_scale=0.45)
STEPS = 300
BATCH = 4


@dataclass(frozen=True)
class TrainedShapes:
    """The checkpoint (config stored: ``load_checkpoint(path)`` needs no overrides; the shapes resize rule
    at ``image_size`` is recorded for ``predict``) and the folder of the images it was trained on."""

    checkpoint: Path
    images: Path
    annotations: Path
    image_size: int


def model_config(num_classes: int, class_names: tuple[str, ...]) -> ModelConfig:
    return ModelConfig(backbone="small_cnn", hidden_dim=64, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=128,
                       dropout=0.0, num_queries=6, num_classes=num_classes, class_names=class_names)


def train_shapes_checkpoint(root: Path, *, steps: int = STEPS, seed: int = 0) -> TrainedShapes:
    """Generate ``PARAMS`` shapes under ``root``, train a tiny DETR on the train split until it has
    memorised it (deterministic: fixed seeds, eval transforms without random flips, one thread's worth of
    work), save ``root/trained_shapes.pth`` and return it with the training image folder."""
    data = generate_shapes(root / "shapes", PARAMS, progress=False)
    images, ann = data / "train2017", data / "annotations" / "instances_train2017.json"
    dataset = CocoDetection(images, ann, transforms=make_shapes_eval_transforms(IMAGE_SIZE))
    config = model_config(dataset.num_classes, tuple(dataset.class_names))
    torch.manual_seed(seed)
    model = build_model(config)
    loss = LossConfig()
    criterion = build_criterion(loss, num_classes=config.num_classes, dec_layers=config.dec_layers,
                                aux_loss=config.aux_loss)
    samples = [dataset[i] for i in range(len(dataset))]  # decoded once: the loop below only reindexes
    collate = make_collate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    criterion.train()
    order: list[int] = []
    for _ in range(steps):
        if len(order) < BATCH:
            order += torch.randperm(len(samples), generator=generator).tolist()
        picked, order = order[:BATCH], order[BATCH:]
        batch_images, mask, targets = collate([samples[i] for i in picked])
        total = weighted_total(criterion(model(batch_images, mask), targets), criterion.weight_dict)
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
    model.eval()
    payload = model_payload(model, config)
    payload["config"]["run"] = {"transforms": "shapes", "image_size": IMAGE_SIZE}
    checkpoint = save_checkpoint(root / "trained_shapes.pth", payload)
    return TrainedShapes(Path(checkpoint), images, ann, IMAGE_SIZE)
