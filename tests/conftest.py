"""Shared fixtures: the reference data of ../shared/reference (skipped with a reason when absent) and a
tiny DETR trained in the session to confident detections (``trained_shapes``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.trained_shapes import TrainedShapes, train_shapes_checkpoint

REFERENCE_DIR = Path(os.environ.get("DETRTOOL_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))


def reference_path(name: str) -> Path:
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference fixture {path} is absent (set DETRTOOL_REFERENCE to the reference folder)")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return reference_path("")


@pytest.fixture(scope="session")
def tiny_checkpoint_path() -> Path:
    return reference_path("tiny_checkpoint.pth")


@pytest.fixture(scope="session")
def tiny_expected() -> dict:
    return torch.load(reference_path("tiny_expected.pt"), weights_only=True)


@pytest.fixture(scope="session")
def segm_checkpoint_path() -> Path:
    """The reference's tiny panoptic checkpoint (official layout; nheads 8, not recorded in the file)."""
    return reference_path("segm_tiny_checkpoint.pth")


@pytest.fixture(scope="session")
def segm_expected() -> dict:
    return torch.load(reference_path("segm_tiny_expected.pt"), weights_only=True)


@pytest.fixture(scope="session")
def trained_shapes(tmp_path_factory) -> TrainedShapes:
    """A tiny DETR (small_cnn, 6 queries) trained for ~300 steps (~10 s on CPU) to memorise 8 synthetic
    96x96 shapes images, with its training image folder. Evaluation images ARE the training images: the
    point is a model with genuinely confident detections (scores ~0.98 on every object, right labels,
    IoU > 0.5 with the ground truth) for comparing detection sets across runtimes, not generalisation."""
    return train_shapes_checkpoint(tmp_path_factory.mktemp("trained_shapes"))


@pytest.fixture(scope="session")
def trained_shapes_checkpoint(trained_shapes) -> Path:
    """The trained checkpoint (config stored: ``load_checkpoint(path)`` needs no overrides)."""
    return trained_shapes.checkpoint


@pytest.fixture(scope="session")
def trained_shapes_images(trained_shapes) -> Path:
    """The folder of the 8 PNG images the trained checkpoint memorised."""
    return trained_shapes.images


@pytest.fixture()
def one_thread():
    """Run a test with one intra-op thread (tiny training steps are much faster so on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
