"""Shared fixtures of the bench tests: the tiny reference model and a small shapes set made in tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from detr_core import load_checkpoint
from detr_core.data.shapes import ShapesParams, generate_shapes
from detr_core.data.sources import DatasetSource

CANVAS = (128, 128)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint_path):
    return load_checkpoint(tiny_checkpoint_path, nheads=4)


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-shapes")
    return generate_shapes(root, ShapesParams(seed=3, image_size=64, train_count=4, val_count=3), progress=False)


@pytest.fixture(scope="session")
def shapes_source(shapes_root) -> DatasetSource:
    return DatasetSource(coco_path=str(shapes_root))


@pytest.fixture(scope="session")
def evalset(shapes_source):
    from bench.data import load_eval_set

    return load_eval_set(shapes_source, canvas=CANVAS, batch_size=2)
