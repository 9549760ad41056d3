"""Fixtures of the HF tests (helpers in :mod:`tests.hf.models`): one thread, a saved random HF DETR."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.hf.models import hf_config, hf_detr, save_hf


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory) -> Path:
    """A saved random ``DetrForObjectDetection`` (timm ResNet-18, 4 heads, 7 queries, 3 named classes)."""
    return save_hf(hf_detr(hf_config()), tmp_path_factory.mktemp("hf") / "detr-r18")
