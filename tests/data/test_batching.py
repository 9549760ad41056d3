"""Collate: pad to the batch maximum or a fixed canvas, mask True on padding; parse_hw."""

from __future__ import annotations

import pytest
import torch

from detr_core.data import collate_fn, make_collate, pad_images, parse_hw


def sample(h, w, image_id):
    return torch.ones(3, h, w), {"image_id": torch.tensor(image_id), "labels": torch.tensor([1])}


def test_collate_pads_to_batch_max():
    images, mask, targets = collate_fn([sample(4, 6, 1), sample(5, 3, 2)])
    assert images.shape == (2, 3, 5, 6) and mask.shape == (2, 5, 6) and mask.dtype == torch.bool
    assert not mask[0, :4, :6].any() and mask[0, 4].all()
    assert not mask[1, :, :3].any() and mask[1, :, 3:].all()
    assert images[1, :, :, 3:].abs().sum() == 0
    assert [t["image_id"].item() for t in targets] == [1, 2]


def test_collate_fixed_canvas():
    images, mask, _ = make_collate((8, 10))([sample(4, 6, 1)])
    assert images.shape == (1, 3, 8, 10) and mask.sum() == 80 - 24


def test_collate_image_too_big_is_clear():
    with pytest.raises(ValueError, match=r"image 7 is 9x6 after transforms and does not fit the --pad-to canvas 8x10"):
        make_collate((8, 10))([sample(4, 6, 1), sample(9, 6, 7)])


def test_pad_images_signature_kept():
    images, mask = pad_images([torch.ones(3, 2, 2)], pad_to=(3, 3))
    assert images.shape == (1, 3, 3, 3) and mask.sum() == 5


@pytest.mark.parametrize(("text", "hw"), [("800x1333", (800, 1333)), (" 64X96 ", (64, 96))])
def test_parse_hw(text, hw):
    assert parse_hw(text) == hw


@pytest.mark.parametrize("text", ["800", "800x", "axb", "0x10", "1x2x3", "-5x10"])
def test_parse_hw_errors(text):
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_hw(text)
