"""``prepare``: the eval rule capped to the canvas (never cropped), normalisation, padding, mask."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from detr_core.data.transforms import make_eval_transforms
from exporters.prepare import prepare, target_size


def test_portrait_fits_canvas_never_cropped():
    assert target_size(4000, 3000, canvas=(800, 1333), size=800, max_size=1333) == (800, 600)
    assert target_size(480, 640, canvas=(800, 1333), size=800, max_size=1333) == (800, 1066)
    assert target_size(480, 640, canvas=None, size=800, max_size=1333) == (800, 1066)
    assert target_size(100, 1000, canvas=(800, 800), size=800, max_size=1333) == (80, 800)


def test_prepare_shapes_mask_and_sizes():
    portrait = torch.randint(0, 256, (3, 400, 300), dtype=torch.uint8)
    wide = np.random.default_rng(0).integers(0, 256, (100, 250, 3), dtype=np.uint8)
    gray = PIL.Image.fromarray(np.full((50, 60), 200, dtype=np.uint8), mode="L")
    images, mask, orig = prepare([portrait, wide, gray], canvas=(128, 160), size=128, max_size=160)
    assert images.shape == (3, 3, 128, 160) and images.dtype == torch.float32
    assert mask.shape == (3, 128, 160) and mask.dtype == torch.bool
    assert orig.tolist() == [[400, 300], [100, 250], [50, 60]] and orig.dtype == torch.int64
    assert (~mask[0]).sum(0).max() == 128 and (~mask[0]).sum(1).max() == 96  # 400x300 -> 128x96
    assert (~mask[1]).sum(1).max() == 160  # 100x250 -> 64x160: capped by the canvas width
    assert mask[0, 0, 96:].all() and not mask[0, :, :96].any()
    assert (images[0][:, mask[0]] == 0).all()


def test_prepare_matches_eval_transform():
    image = torch.randint(0, 256, (3, 90, 70), dtype=torch.uint8)
    images, mask, _ = prepare([image], canvas=None, size=64, max_size=100)
    ref, _ = make_eval_transforms(size=64, max_size=100)(image, {})
    assert images.shape[-2:] == ref.shape[-2:] and not mask.any()
    assert torch.allclose(images[0], ref, atol=1e-5)


def test_static_batch_filler_and_errors():
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    images, mask, orig = prepare([image], canvas=(32, 48), size=32, max_size=48, batch_size=3)
    assert images.shape[0] == 3 and not mask[1:].any() and orig[1:].tolist() == [[32, 48], [32, 48]]
    with pytest.raises(ValueError, match="static batch of 1"):
        prepare([image, image], canvas=(32, 48), batch_size=1)
    with pytest.raises(ValueError, match="uint8"):
        prepare([torch.zeros(3, 10, 10)], canvas=(32, 48))
    with pytest.raises(ValueError, match="no images"):
        prepare([], canvas=(32, 48))
