"""Resize rule (vs an independent copy of the reference), presets, and boxes staying on their pixels."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision import tv_tensors

from detr_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomSizeCrop,
    ResizeShorterSide,
    eval_resize_size,
    fit_size_to_canvas,
    make_eval_transforms,
    make_shapes_train_transforms,
    make_train_transforms,
)


def reference_rule(image_size_wh, size, max_size=None):
    """detr/datasets/transforms.py::get_size_with_aspect_ratio, written out again (w, h in; h, w out)."""
    w, h = image_size_wh
    if max_size is not None:
        min_original_size = float(min((w, h)))
        max_original_size = float(max((w, h)))
        if max_original_size / min_original_size * size > max_size:
            size = int(round(max_size * min_original_size / max_original_size))
    if (w <= h and w == size) or (h <= w and h == size):
        return (h, w)
    if w < h:
        ow = size
        oh = int(size * h / w)
    else:
        oh = size
        ow = int(size * w / h)
    return (oh, ow)


SIZES = [(333, 500), (500, 334), (375, 500), (480, 640), (1, 4000), (800, 1333), (1333, 800), (427, 640),
         (640, 427), (612, 612), (799, 1201), (100, 100), (4000, 1), (600, 2000), (1080, 1920)]


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_eval_resize_size_matches_reference_rule(h, w):
    assert eval_resize_size(h, w, 800, 1333) == reference_rule((w, h), 800, 1333)
    assert eval_resize_size(h, w, 128, None) == reference_rule((w, h), 128, None)


@pytest.mark.parametrize(("h", "w"), [s for s in SIZES if min(reference_rule((s[1], s[0]), 800, 1333)) > 0])
def test_eval_transform_output_size_follows_rule(h, w):
    image = tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8))
    out = make_eval_transforms(size=800, max_size=1333)(image)
    assert tuple(out.shape[-2:]) == reference_rule((w, h), 800, 1333)
    assert out.dtype == torch.float32


def test_known_values_and_degenerate_aspect():
    assert eval_resize_size(333, 500, 800, 1333) == (800, 1201)
    assert eval_resize_size(500, 334, 800, 1333) == (1197, 800)
    assert eval_resize_size(480, 640, 800, 1333) == (800, 1066)
    assert eval_resize_size(1, 4000, 800, 1333) == (0, 0)  # the reference's own answer
    out = ResizeShorterSide(800, 1333)(tv_tensors.Image(torch.zeros(3, 1, 4000, dtype=torch.uint8)))
    assert min(out.shape[-2:]) >= 1


def test_fit_size_to_canvas_scales_down_never_crops():
    assert fit_size_to_canvas(480, 640, 800, 1333, (800, 1333)) == (800, 1066)
    h, w = fit_size_to_canvas(480, 640, 800, 1333, (800, 800))
    assert h <= 800 and w == 800 and abs(h / w - 480 / 640) < 0.01
    h, w = fit_size_to_canvas(1333, 800, 800, 1333, (640, 640))
    assert h == 640 and w <= 640


def test_normalisation_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)
    image = tv_tensors.Image(torch.full((3, 20, 20), 255, dtype=torch.uint8))
    out = make_eval_transforms(size=20, max_size=None)(image)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 0, 0], expected)


def drawn_sample(h=60, w=80, box=(10, 15, 50, 45)):
    """A black image with a white filled box, plus that box as XYXY BoundingBoxes."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    boxes = tv_tensors.BoundingBoxes(torch.tensor([box], dtype=torch.float32), format="XYXY", canvas_size=(h, w))
    return tv_tensors.Image(image), {"boxes": boxes, "labels": torch.tensor([1])}


def white_extent(image: torch.Tensor) -> list[float]:
    """XYXY pixel-edge extent of the bright pixels of a [3, H, W] image (any dtype)."""
    on = image.float().mean(0) > image.float().mean(0).max() / 2
    ys, xs = torch.nonzero(on, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize("seed", range(6))
def test_flip_crop_resize_keep_boxes_on_pixels(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    image, target = drawn_sample()
    pipeline = [ResizeShorterSide((40, 50, 70), 100), RandomSizeCrop(30, 50), ResizeShorterSide((64, 96), 160)]
    from torchvision.transforms import v2

    image, target = v2.Compose([v2.RandomHorizontalFlip(p=0.5), *pipeline, v2.ClampBoundingBoxes()])(image, target)
    if (target["boxes"][:, 2:] - target["boxes"][:, :2]).min() < 2:
        pytest.skip("crop left too little of the box to compare")
    expected = torch.tensor(white_extent(image), dtype=torch.float32)
    torch.testing.assert_close(target["boxes"][0].as_subclass(torch.Tensor), expected, atol=2.0, rtol=0)


def test_flip_moves_box_exactly():
    image, target = drawn_sample()
    from torchvision.transforms import v2

    image, target = v2.RandomHorizontalFlip(p=1.0)(image, target)
    assert target["boxes"][0].tolist() == white_extent(image) == [30, 15, 70, 45]


def test_crop_clips_box_to_window():
    random.seed(3)
    image, target = drawn_sample(h=100, w=100, box=(0, 0, 100, 100))
    image, target = RandomSizeCrop(40, 60)(image, target)
    h, w = image.shape[-2:]
    assert 40 <= h <= 60 and 40 <= w <= 60
    assert target["boxes"][0].tolist() == [0, 0, w, h]


def test_train_presets_run_and_normalise():
    random.seed(0)
    image, target = drawn_sample(h=128, w=128, box=(20, 20, 90, 100))
    for _ in range(10):
        out, tgt = make_shapes_train_transforms(128)(image, target)
        assert out.dtype == torch.float32 and out.shape[0] == 3
        assert max(out.shape[-2:]) <= 128 * 5 // 3
        assert tgt["boxes"].canvas_size == tuple(out.shape[-2:])
    out, _ = make_train_transforms()(image, target)
    assert 480 <= min(out.shape[-2:]) <= 800



def test_vertical_flip_option_flips_image_and_box_together():
    from torchvision.transforms import v2

    from detr_core.presets import transforms_for

    image, target = drawn_sample(h=128, w=128, box=(20, 10, 60, 40))

    def box_centres_y(vertical_flip: bool) -> list[float]:
        centres = []
        for seed in range(12):
            random.seed(seed)
            torch.manual_seed(seed)
            out, tgt = transforms_for("shapes", 128, vertical_flip=vertical_flip)[0](image, target)
            expected = torch.tensor(white_extent(out), dtype=torch.float32)
            torch.testing.assert_close(tgt["boxes"][0].as_subclass(torch.Tensor), expected, atol=1e-4, rtol=0)
            centres.append(float(tgt["boxes"][0, 1] + tgt["boxes"][0, 3]) / 2)
        return centres

    assert sorted(set(box_centres_y(True))) == [25.0, 103.0]  # upright in some draws, upside down in others
    assert set(box_centres_y(False)) == {25.0}
    train, _ = transforms_for("detr", vertical_flip=True)
    assert isinstance(train.transforms[0], v2.RandomVerticalFlip)
