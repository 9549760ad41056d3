"""CocoDetection(masks=True): segmentations decoded as pycocotools does, checked first, moved with the boxes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import box_convert
from torchvision.transforms import v2

from detr_core.data import CocoDetection, DatasetError, collate_fn
from detr_core.data.coco_masks import compressed_rle_counts, encode_mask, segmentation_problem
from detr_core.data.transforms import (
    RandomSizeCrop,
    ResizeShorterSide,
    make_eval_transforms,
    make_shapes_eval_transforms,
    make_shapes_train_transforms,
    make_train_transforms,
)
from tests.data import write_coco

H, W = 48, 64


def _blob() -> np.ndarray:
    """An irregular uint8 [H, W] mask: a disc plus a separate bar (two parts, holes between)."""
    ys, xs = np.mgrid[0:H, 0:W]
    disc = (ys - 30) ** 2 + (xs - 20) ** 2 <= 100
    bar = (ys >= 5) & (ys < 12) & (xs >= 40) & (xs < 60)
    return (disc | bar).astype(np.uint8)


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of ``mask`` (column-major runs starting with a 0-run), written out by hand."""
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": [H, W], "counts": ([0] + runs) if flat[0] else runs}


SEGMENTATIONS = {
    "polygon": [[4, 4, 30, 6, 26, 28, 8, 20.5]],
    "two_polygons": [[4, 4, 14, 4, 14, 14], [40, 30, 60, 30, 60, 45, 40, 45]],
    "uncompressed_rle": _uncompressed(_blob()),
    "compressed_rle": encode_mask(_blob()),
}


def _coco(tmp_path, segmentations: list, crowd: tuple[int, ...] = ()) -> tuple:
    anns = [{"id": i + 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
             "iscrowd": int(i in crowd), "segmentation": seg} for i, seg in enumerate(segmentations)]
    return write_coco(tmp_path, [{"id": 7, "file_name": "a.png", "height": H, "width": W}], anns)


@pytest.mark.parametrize("kind", SEGMENTATIONS)
def test_decoding_equals_pycocotools_ann_to_mask(tmp_path, kind):
    ds = CocoDetection(*_coco(tmp_path, [SEGMENTATIONS[kind]]), masks=True)
    _, target = ds[0]
    expected = ds.coco.annToMask(ds.coco.anns[1])
    assert target["masks"].dtype == torch.bool and target["masks"].shape == (1, H, W)
    assert expected.sum() > 20
    np.testing.assert_array_equal(target["masks"][0].numpy(), expected.astype(bool))


def test_crowd_rle_decoded_when_crowd_kept_and_masks_off_by_default(tmp_path):
    paths = _coco(tmp_path, [SEGMENTATIONS["polygon"], SEGMENTATIONS["uncompressed_rle"]], crowd=(1,))
    _, kept = CocoDetection(*paths, masks=True, drop_crowd=False)[0]
    assert kept["iscrowd"].tolist() == [0, 1]
    np.testing.assert_array_equal(kept["masks"][1].numpy(), _blob().astype(bool))
    _, dropped = CocoDetection(*paths, masks=True)[0]
    assert dropped["masks"].shape == (1, H, W)
    assert "masks" not in CocoDetection(*paths)[0][1]


def test_compressed_counts_reader_matches_pycocotools():
    rle = mask_utils.encode(np.asfortranarray(_blob()))
    assert compressed_rle_counts(rle["counts"].decode()) == _uncompressed(_blob())["counts"]


BAD = [
    ("wrong_type", "a string", "is a str, not polygons"),
    ("odd_polygon", [[1, 2, 3, 4, 5, 6, 7]], "polygon 0 has an odd number of coordinates (7)"),
    ("nan_polygon", [[1, 2, 3, None, 5, 6]], "polygon 0 is not a list of finite numbers"),
    ("empty", [], "is an empty polygon list"),
    ("far_vertex", [[0, 0, 3e7, 0, 3e7, 3e7]], f"polygon 0 has a vertex far outside the {H}x{W} (HxW) image"),
    ("rle_size", {"size": [H, W + 1], "counts": [H * (W + 1)]}, f"RLE size {H}x{W + 1} does not match"),
    ("rle_runs", {"size": [H, W], "counts": [5, 5]}, "RLE runs sum to 10 (or hold a negative run), not height"),
    ("rle_negative", {"size": [H, W], "counts": [H * W + 5, -5]}, "negative run"),
    ("rle_overflow", {"size": [H, W], "counts": "0" + "o" * 30 + "1"}, "RLE runs sum to"),  # would overrun the buffer
    ("rle_cut", {"size": [H, W], "counts": "Q"}, "neither a list of integers nor a compressed RLE string"),
]


@pytest.mark.parametrize(("segmentation", "message"), [(s, m) for _, s, m in BAD], ids=[i for i, _, _ in BAD])
def test_malformed_segmentation_is_one_line_naming_file_image_and_annotation(tmp_path, segmentation, message):
    ds = CocoDetection(*_coco(tmp_path, [SEGMENTATIONS["polygon"], segmentation]), masks=True)
    with pytest.raises(DatasetError) as caught:
        ds[0]
    text = str(caught.value)
    assert "\n" not in text and message in text
    assert text.startswith(f"{tmp_path / 'ann.json'}: image 7, annotation 2: segmentation ")


def test_missing_segmentation_named(tmp_path):
    paths = write_coco(tmp_path, [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
                       [{"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}])
    with pytest.raises(DatasetError, match=r"ann\.json: image 7, annotation 3: segmentation has no 'segmentation'"):
        CocoDetection(*paths, masks=True)[0]


def test_valid_segmentations_have_no_problem():
    assert all(segmentation_problem(s, (H, W)) is None for s in SEGMENTATIONS.values())


def _rect(x0: int, y0: int, x1: int, y1: int, hw: tuple[int, int] = (40, 100)) -> dict:
    """Compressed RLE of the pixel block [x0, x1) x [y0, y1) on an ``hw`` canvas."""
    block = np.zeros(hw, dtype=np.uint8)
    block[y0:y1, x0:x1] = 1
    return encode_mask(block)


def _boxes_px(target: dict) -> torch.Tensor:
    h, w = target["size"].tolist()
    return box_convert(target["boxes"] * torch.tensor([w, h, w, h]), "cxcywh", "xyxy")


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    from detr_core.data.coco_panoptic import masks_to_xyxy

    return masks_to_xyxy(masks)


#: label -> (x0, x1, y0, y1): left, middle (always partly inside a crop) and right blocks, each in its own rows
CROP_BLOCKS = {1: (0, 10, 0, 10), 2: (45, 55, 10, 30), 5: (90, 100, 30, 40)}


def test_crop_that_drops_an_object_keeps_masks_row_aligned(tmp_path):
    # a 50-wide crop of 100 columns always loses the left or the right block (or both)
    anns = [{"id": i + 1, "image_id": 7, "category_id": c, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 1,
             "iscrowd": 0, "segmentation": _rect(x0, y0, x1, y1)} for i, (c, (x0, x1, y0, y1))
            in enumerate(CROP_BLOCKS.items())]
    paths = write_coco(tmp_path, [{"id": 7, "file_name": "a.png", "height": 40, "width": 100}], anns)
    ds = CocoDetection(*paths, masks=True, transforms=RandomSizeCrop(50, 50))
    dropped = set()
    for seed in range(12):
        random.seed(seed)
        _, target = ds[0]
        labels = target["labels"].tolist()
        assert 2 in labels and len(labels) < 3 and target["masks"].shape == (len(labels), 40, 50)
        dropped |= {1, 5} - set(labels)
        torch.testing.assert_close(_mask_boxes(target["masks"]), _boxes_px(target), atol=1e-4, rtol=0)
        for row, label in enumerate(labels):  # each row's mask lies in its own object's band of rows
            rows = torch.nonzero(target["masks"][row].any(1))[:, 0]
            assert (rows.min().item(), rows.max().item() + 1) == CROP_BLOCKS[label][2:]
    assert dropped == {1, 5}


BLOCKS = [(4, 6, 20, 30), (30, 2, 58, 14), (24, 28, 60, 46)]


def _block_dataset(tmp_path, transforms) -> CocoDetection:
    anns = [{"id": i + 1, "image_id": 7, "category_id": i + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 1,
             "iscrowd": 0, "segmentation": _rect(x0, y0, x1, y1, (H, W))} for i, (x0, y0, x1, y1) in enumerate(BLOCKS)]
    paths = write_coco(tmp_path, [{"id": 7, "file_name": "a.png", "height": H, "width": W}], anns,
                       categories=[{"id": i, "name": str(i)} for i in (1, 2, 3)])
    return CocoDetection(*paths, masks=True, transforms=transforms)


def _box_error(ds: CocoDetection, seed: int) -> tuple[float, tuple[int, int]]:
    """Largest |box of the transformed mask - transformed box| in pixels, and the output (h, w)."""
    random.seed(seed)
    torch.manual_seed(seed)
    image, target = ds[0]
    assert target["masks"].shape == (len(target["labels"]), *image.shape[-2:])
    assert target["masks"].flatten(1).any(1).all() and len(target["labels"]) >= 1
    error = (_mask_boxes(target["masks"]) - _boxes_px(target)).abs().max().item()
    return error, tuple(image.shape[-2:])


#: one geometric step each: flip and crop are exact, a resize (nearest on masks) is within a pixel
STEPS = {
    "flip": (lambda: v2.RandomHorizontalFlip(p=1.0), 0.0),
    "crop": (lambda: RandomSizeCrop(24, 40), 0.0),
    "resize_up": (lambda: ResizeShorterSide((61, 77, 100)), 1.0),
    "resize_down": (lambda: ResizeShorterSide((17, 23, 31)), 1.0),
}


@pytest.mark.parametrize("step", STEPS)
def test_each_step_moves_masks_with_boxes_within_a_pixel(tmp_path, step):
    make, bound = STEPS[step]
    ds = _block_dataset(tmp_path, make())
    assert max(_box_error(ds, seed)[0] for seed in range(6)) <= bound + 1e-4


#: preset -> (transforms, the smallest crop side it resizes up from, or None when it resizes once)
PRESETS = {
    "train": (lambda: make_train_transforms(scales=(40, 56, 72), max_size=120, crop_resize=(48,),
                                            crop_range=(30, 44)), 30),
    "eval": (lambda: make_eval_transforms(size=72, max_size=120), None),
    "shapes_train": (lambda: make_shapes_train_transforms(64), 32),
    "shapes_eval": (lambda: make_shapes_eval_transforms(40), None),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_move_masks_with_boxes(tmp_path, preset):
    """One resize: within a pixel. Resize, crop, resize: the first resize's sub-pixel rounding is scaled by the
    second, so the bound is a pixel of the coarsest grid: 1 + (final shorter side / smallest crop side)."""
    make, min_crop = PRESETS[preset]
    ds = _block_dataset(tmp_path, make())
    for seed in range(10):
        error, (h, w) = _box_error(ds, seed)
        bound = 1.0 if min_crop is None else 1.0 + min(h, w) / min_crop
        assert error <= bound + 1e-4, (seed, error, bound)


def test_collate_keeps_each_images_own_mask_size(tmp_path):
    images = [{"id": 7, "file_name": "a.png", "height": 40, "width": 60},
              {"id": 9, "file_name": "b.png", "height": 30, "width": 30}]
    anns = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 2, 9, 9], "area": 81, "iscrowd": 0,
             "segmentation": _rect(2, 2, 11, 11, (40, 60))},
            {"id": 2, "image_id": 9, "category_id": 2, "bbox": [3, 3, 9, 9], "area": 81, "iscrowd": 0,
             "segmentation": _rect(3, 3, 12, 12, (30, 30))}]
    ds = CocoDetection(*write_coco(tmp_path, images, anns), masks=True)
    padded, mask, targets = collate_fn([ds[0], ds[1]])
    assert padded.shape == (2, 3, 40, 60)
    assert [tuple(t["masks"].shape) for t in targets] == [(1, 40, 60), (1, 30, 30)]
    assert [int(t["masks"].sum()) for t in targets] == [81, 81]
