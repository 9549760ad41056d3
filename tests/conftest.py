"""Shared fixtures: the reference data of ../shared/reference (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
