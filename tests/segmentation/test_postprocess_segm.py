"""PostProcessSegm and the panoptic post-processing against the reference fixture (segm_tiny_expected.pt)
and on hand-made logits (stuff merging, the small-segment filter, padding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detr_core.postprocess import postprocess
from detr_core.segmentation import PostProcessPanoptic, PostProcessSegm, panoptic_predictions, segm_masks
from detr_core.segmentation.postprocess import upsample_query_masks
from tests.conftest import reference_path


@pytest.fixture(scope="module")
def segm_expected() -> dict:
    return torch.load(reference_path("segm_tiny_expected.pt"), weights_only=True)


def test_postprocess_segm_equals_reference(segm_expected):
    outputs, orig, max_sizes = segm_expected["outputs"], segm_expected["orig_sizes"], segm_expected["max_sizes"]
    results = PostProcessSegm()(postprocess(outputs, orig), outputs, orig, max_sizes)
    for got, want in zip(results, segm_expected["postprocess_segm"], strict=True):
        assert got["masks"].dtype == torch.uint8 and got["masks"].shape == want["masks"].shape
        assert torch.equal(got["masks"], want["masks"])
        assert 0.05 < want["masks"].float().mean() < 0.95  # a mask with both values, not a trivial one
        assert torch.equal(got["labels"], want["labels"])
        torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-4, rtol=0)


def test_segm_masks_crop_each_image_before_resizing():
    """An image smaller than the batch canvas keeps only its own region: a mask true exactly on the
    bottom-right padding comes out all zero, one true on the image comes out all one."""
    logits = torch.full((2, 2, 6, 8), -10.0)
    logits[:, 0, :, :] = 10.0
    logits[1, 1, 3:, 4:] = 10.0  # image 1 is 3x4 of the 6x8 canvas (stride 1 here): this is padding only
    masks = segm_masks(logits, torch.tensor([[12, 16], [9, 8]]), torch.tensor([[6, 8], [3, 4]]))
    assert [tuple(m.shape) for m in masks] == [(2, 1, 12, 16), (2, 1, 9, 8)]
    assert masks[1][0].all() and not masks[1][1].any() and not masks[0][1].any()


def test_panoptic_equals_reference(segm_expected):
    """The reference stretches the padded-canvas masks (no ``input_sizes``): identical maps and segments."""
    panoptic = segm_expected["panoptic"]
    module = PostProcessPanoptic(panoptic["is_thing"], threshold=panoptic["threshold"])
    results = module(segm_expected["outputs"], segm_expected["max_sizes"], segm_expected["orig_sizes"])
    for got, want in zip(results, panoptic["results"], strict=True):
        assert got["segment_ids"].dtype == torch.int64
        assert torch.equal(got["segment_ids"], want["segment_ids"])
        assert got["segments_info"] == want["segments_info"]
    assert sum(len(r["segments_info"]) for r in results) == 5


def test_fixture_holds_the_stretched_padding_not_the_crop(segm_expected):
    """Which behaviour the fixture holds: the crop path (``input_sizes``) differs from it on both images."""
    panoptic = segm_expected["panoptic"]
    canvas = torch.tensor([list(segm_expected["padded"].shape[-2:])] * 2)
    results = panoptic_predictions(segm_expected["outputs"], segm_expected["max_sizes"], segm_expected["orig_sizes"],
                                   is_thing=panoptic["is_thing"], threshold=panoptic["threshold"], input_sizes=canvas)
    for got, want in zip(results, panoptic["results"], strict=True):
        assert (got["segment_ids"] != want["segment_ids"]).float().mean() > 0.2


def _binary_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_crop_path_matches_the_single_image_masks_better(segm_expected):
    """Real data: image 0 (96x128) in the 120x128 padded batch against the same image fed alone. The crop
    path's per-query masks (sigmoid > 0.5) overlap the single-image ones far more than the stretched ones
    (measured mean IoU 0.94 vs 0.77; the rest is the random model reacting to padding)."""
    single = upsample_query_masks(segm_expected["single_outputs"]["pred_masks"][0], (96, 128), None) > 0
    batch = segm_expected["outputs"]["pred_masks"][0]
    stretched = upsample_query_masks(batch, (96, 128), None) > 0
    cropped = upsample_query_masks(batch, (96, 128), (120, 128)) > 0
    iou_stretched = np.mean([_binary_iou(s, q) for s, q in zip(stretched, single, strict=True)])
    iou_cropped = np.mean([_binary_iou(c, q) for c, q in zip(cropped, single, strict=True)])
    assert iou_cropped > 0.85 and iou_cropped > iou_stretched + 0.15, (iou_cropped, iou_stretched)


def _two_class_outputs(masks: torch.Tensor, labels: list[int], num_classes: int = 4) -> dict:
    logits = torch.full((1, len(labels), num_classes + 1), -10.0)
    logits[0, torch.arange(len(labels)), torch.tensor(labels)] = 10.0
    return {"pred_logits": logits, "pred_masks": masks[None]}


def test_crop_path_equals_the_unpadded_image_on_its_region():
    """Hand-made: an image's stride-4 masks placed in a taller padded canvas with noise on the padding. The
    crop path equals the unpadded image's panoptic map except the last rows (bilinear reads the padding
    there); the reference path stretches it and disagrees on much of the map."""
    torch.manual_seed(3)
    own = torch.randn(3, 6, 8) * 4
    canvas = torch.cat([own, torch.randn(3, 4, 8) * 4], dim=1)  # 24x32 image in a 40x32 canvas
    is_thing = {0: True, 1: True, 2: False, 3: False}
    kwargs = {"is_thing": is_thing, "threshold": 0.5}
    size = torch.tensor([[24, 32]])
    alone = panoptic_predictions(_two_class_outputs(own, [0, 1, 2]), size, **kwargs)[0]["segment_ids"]
    padded = _two_class_outputs(canvas, [0, 1, 2])
    crop = panoptic_predictions(padded, size, input_sizes=torch.tensor([[40, 32]]), **kwargs)[0]["segment_ids"]
    stretch = panoptic_predictions(padded, size, **kwargs)[0]["segment_ids"]
    assert torch.equal(crop[:22], alone[:22])
    assert (crop == alone).float().mean() > 0.95 > 0.8 > (stretch == alone).float().mean()


def test_stuff_of_one_class_merged_and_small_segments_dropped():
    """Two stuff queries of class 2 share the first one's id; the second, left with area 0, is dropped by
    the small-segment filter and the re-run gives its pixels to the best remaining query. A thing query
    winning 4 pixels is dropped in the same round (a merged member always has area 0, so after the first
    round one query per stuff class is left and the reference's unmerged re-runs change nothing)."""
    masks = torch.full((4, 8, 8), -5.0)
    masks[0, :, :4] = 5.0  # thing class 0: left half
    masks[1, :4, 4:] = 5.0  # stuff class 2: top right
    masks[2, 4:, 4:] = 5.0  # stuff class 2: bottom right
    masks[1, 4:, 4:] = 0.0  # ... where the first stuff query is second best
    masks[3, 0, 0:4] = 6.0  # thing class 1: 4 pixels on the first row only, beaten nowhere else
    is_thing = {0: True, 1: True, 2: False}
    merged = panoptic_predictions(_two_class_outputs(masks[:3], [0, 2, 2]), torch.tensor([[8, 8]]),
                                  is_thing=is_thing, threshold=0.5)[0]  # fmt: skip
    assert merged["segments_info"] == [{"id": 0, "isthing": True, "category_id": 0, "area": 32},
                                       {"id": 1, "isthing": False, "category_id": 2, "area": 32}]  # fmt: skip
    filtered = panoptic_predictions(_two_class_outputs(masks, [0, 2, 2, 1]), torch.tensor([[8, 8]]),
                                    is_thing=is_thing, threshold=0.5)[0]  # fmt: skip
    assert filtered["segments_info"] == merged["segments_info"]
    assert torch.equal(filtered["segment_ids"], merged["segment_ids"])
    assert torch.equal(filtered["segment_ids"][0, :4], torch.zeros(4, dtype=torch.int64))


def test_no_kept_query_gives_no_segment():
    outputs = _two_class_outputs(torch.randn(2, 4, 4), [4, 4])  # both "no object"
    result = panoptic_predictions(outputs, torch.tensor([[4, 4]]), torch.tensor([[7, 9]]), is_thing={0: True})[0]
    assert result["segments_info"] == [] and torch.equal(result["segment_ids"], torch.zeros(7, 9, dtype=torch.int64))


def test_target_resize_is_pils_nearest_not_torchs():
    """The id map is resized with PIL NEAREST; torch's nearest picks other rows for a 5 -> 7 resize."""
    masks = torch.full((5, 5, 5), -5.0)
    for row in range(5):
        masks[row, row] = 5.0
    outputs = _two_class_outputs(masks, [0] * 5, num_classes=1)
    got = panoptic_predictions(outputs, torch.tensor([[5, 5]]), torch.tensor([[7, 5]]), is_thing={0: True},
                               threshold=0.5)[0]["segment_ids"][:, 0]  # fmt: skip
    torch_nearest = F.interpolate(torch.arange(5.0)[None, None, :, None], size=(7, 1), mode="nearest")
    assert got.tolist() == [0, 1, 1, 2, 3, 3, 4]  # PIL: source row floor((i + 0.5) * 5 / 7)
    assert torch_nearest.flatten().long().tolist() == [0, 0, 1, 2, 2, 3, 4]
