"""Fixtures of the HF tests (helpers in :mod:`tests.hf.models`): one thread, a saved random HF DETR and a
saved random HF DetrForSegmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.hf.models import hf_config, hf_detr, hf_segmentation, save_hf, segmentation_config


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


@pytest.fixture(scope="session")
def hf_segm_folder(tmp_path_factory) -> Path:
    """A saved random ``DetrForSegmentation`` (timm ResNet-18, d_model 128, 8 heads, 5 queries, 3 named classes)."""
    return save_hf(hf_segmentation(segmentation_config()), tmp_path_factory.mktemp("hf") / "detr-segm-r18")
