"""Mask AP (CocoEvaluator iou_type="segm") against pycocotools' COCOeval segm run directly, on a hand-made
ground truth with polygons, compressed RLE and an uncompressed crowd RLE; both backends."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from detr_core.evaluation.coco import CocoEvaluator
from tests.evaluation.direct_cocoeval import cocoeval_stats

SIZES = {1: (40, 50), 2: (48, 36), 3: (30, 30), 4: (80, 72)}


def _annotation(ann_id: int, image_id: int, category: int, segmentation, iscrowd: int = 0) -> dict:
    h, w = SIZES[image_id]
    if isinstance(segmentation, dict) and isinstance(segmentation["counts"], str):  # compressed RLE
        rle = {**segmentation, "counts": segmentation["counts"].encode()}
    else:
        rle = mask_utils.frPyObjects(segmentation, h, w)
        rle = mask_utils.merge(rle) if isinstance(rle, list) else rle
    return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": segmentation,
            "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": iscrowd}  # fmt: skip


def _compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths of the column-major mask, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], edges])).tolist()}


def _ground_truth() -> dict:
    blob = np.zeros(SIZES[2], bool)
    blob[10:30, 5:25] = True
    blob[15:20, 10:15] = False  # a hole: only a mask (RLE) can say it
    crowd = np.zeros(SIZES[1], bool)
    crowd[25:38, 30:48] = True
    annotations = [
        _annotation(1, 1, 1, [[2, 2, 20, 2, 20, 18, 2, 18]]),
        _annotation(2, 1, 2, [[25, 3, 45, 3, 35, 20], [40, 10, 48, 10, 48, 16, 40, 16]]),  # two polygons
        _annotation(3, 1, 1, _uncompressed(crowd), iscrowd=1),
        _annotation(4, 2, 2, _compressed(blob)),
        _annotation(5, 2, 1, [[20, 32, 34, 32, 34, 46, 20, 46]]),
        _annotation(6, 3, 1, [[3, 3, 12, 3, 12, 12, 3, 12]]),
        _annotation(7, 4, 2, [[5, 5, 60, 5, 60, 60, 5, 60]]),  # medium (area > 32²)
    ]
    return {"images": [{"id": i, "file_name": f"{i}.png", "height": h, "width": w} for i, (h, w) in SIZES.items()],
            "annotations": annotations, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}  # fmt: skip


def _predictions(gt: dict, rng: np.random.Generator) -> dict[int, dict]:
    """Per image: every gt mask shifted by 0-3 pixels (some relabelled), plus random boxes as masks."""
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    predictions = {}
    for image_id, (h, w) in SIZES.items():
        masks, labels = [], []
        for ann in coco.imgToAnns[image_id]:
            shift = rng.integers(0, 4, 2)
            masks.append(np.roll(coco.annToMask(ann), tuple(shift), axis=(0, 1)))
            labels.append(ann["category_id"] if rng.random() > 0.2 else 3 - ann["category_id"])
        for _ in range(3):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            noise = np.zeros((h, w), np.uint8)
            noise[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12)] = 1
            masks.append(noise)
            labels.append(int(rng.integers(1, 3)))
        masks = torch.from_numpy(np.stack(masks))[:, None]
        predictions[image_id] = {"scores": torch.from_numpy(rng.random(len(labels))), "labels": torch.tensor(labels),
                                 "boxes": torch.zeros(len(labels), 4), "masks": masks}  # fmt: skip
    return predictions


def _pycocotools_segm(gt: dict, predictions: dict[int, dict]) -> list[float]:
    """pycocotools alone: our own RLE encoding of the masks, COCOeval(iouType="segm")."""
    results = [{"image_id": image_id, "category_id": int(label), "score": float(score),
                "segmentation": _compressed(mask[0].numpy())}
               for image_id, p in predictions.items()
               for label, score, mask in zip(p["labels"], p["scores"], p["masks"], strict=True)]  # fmt: skip
    return cocoeval_stats(gt, results, "segm")


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_mask_ap_equals_pycocotools_segm(backend):
    gt = _ground_truth()
    predictions = _predictions(gt, np.random.default_rng(1))
    expected = _pycocotools_segm(gt, predictions)
    evaluator = CocoEvaluator(gt, backend=backend, iou_type="segm")
    evaluator.process(predictions)
    stats = evaluator.evaluate()["stats"]
    np.testing.assert_allclose(stats, expected, atol=1e-6, rtol=0)
    assert 0.2 < stats[0] < 0.9 and stats[1] > stats[2] and stats[4] >= 0  # a real AP: shifted masks lose at high IoU
    box_evaluator = CocoEvaluator(gt, backend=backend)  # same predictions, boxes all zero: AP 0
    box_evaluator.process(predictions)
    assert box_evaluator.evaluate()["AP"] == 0.0


def test_segm_results_are_rles_without_bbox():
    gt = _ground_truth()
    evaluator = CocoEvaluator(gt, iou_type="segm")
    evaluator.process(_predictions(gt, np.random.default_rng(2)))
    result = evaluator.results()[0]
    assert set(result) == {"image_id", "category_id", "segmentation", "score"}
    decoded = mask_utils.decode({"size": result["segmentation"]["size"],
                                 "counts": result["segmentation"]["counts"].encode()})  # fmt: skip
    assert decoded.shape == SIZES[1] and decoded.sum() > 0


def test_segm_needs_masks_at_the_image_size():
    gt = _ground_truth()
    evaluator = CocoEvaluator(gt, iou_type="segm")
    prediction = {"scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64), "boxes": torch.zeros(1, 4)}
    with pytest.raises(ValueError, match="image 1: iou_type 'segm' needs 'masks'"):
        evaluator.process({1: prediction})
    with pytest.raises(ValueError, match=r"image 1: masks are \[30, 30\]"):
        evaluator.process({1: {**prediction, "masks": torch.ones(1, 1, 30, 30, dtype=torch.uint8)}})
    with pytest.raises(ValueError, match="Q = 1 detections"):
        evaluator.process({1: {**prediction, "masks": torch.ones(2, 1, 40, 50, dtype=torch.uint8)}})
