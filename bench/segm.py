"""Mask AP and PQ of a segmentation model's raw outputs, for the benchmark's accuracy rows.

Every row's ``pred_masks`` [N, Q, h, w] (logits at stride s of the bench's padded canvas) go through the same
post-processing as eager's, so a row's mask AP and PQ differ from eager's only by what its outputs differ:

- masks per detection (:func:`detection_masks`): ``PostProcessSegm``'s maths on the padded canvas — bilinear
  to the canvas, sigmoid > 0.5, cropped to the image's own region (its size as fed), nearest to its original
  size — scored by :class:`~detr_core.evaluation.coco.CocoEvaluator` ``iou_type="segm"`` against the
  instance masks of the eval set's COCO ground truth (``mask_AP`` ... ``mask_AR100``, 0..1);
- panoptic maps (:func:`detr_core.segmentation.postprocess.panoptic_predictions` with ``input_sizes`` = the
  canvas, score threshold 0.85 as the reference) scored by
  :class:`~detr_core.evaluation.panoptic.PanopticEvaluator` against the eval set's COCO panoptic ground
  truth when it has one (``PQ``, ``SQ``, ``RQ`` and their ``_th`` / ``_st`` parts, 0..1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detr_core.evaluation.segmentation import MASK_THRESHOLD, PANOPTIC_THRESHOLD, thing_detections

PQ_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")


@dataclass
class PanopticTruth:
    """A COCO panoptic ground truth: the JSON dict (``annotations``, ``categories`` with ``isthing``) and
    the folder of its PNGs; ``is_thing`` maps category id -> thing (True) or stuff (False)."""

    data: dict[str, Any]
    png_dir: Path

    @property
    def is_thing(self) -> dict[int, bool]:
        return {int(c["id"]): bool(c.get("isthing", 1)) for c in self.data["categories"]}


def load_panoptic_truth(root: str | Path | None) -> PanopticTruth | None:
    """The val split's panoptic ground truth in the reference layout under ``root``
    (``annotations/panoptic_val2017.json`` + ``panoptic_val2017/``), None when ``root`` has none."""
    from detr_core.data.coco_panoptic import load_panoptic_json, panoptic_split_paths

    if root is None:
        return None
    _, ann, pngs = panoptic_split_paths(root, "val")
    return PanopticTruth(load_panoptic_json(ann), pngs) if ann.is_file() else None


def fed_sizes(mask: Tensor) -> Tensor:
    """Each image's size as fed (h, w) [B, 2] from the padding ``mask`` [B, H, W] (images top-left)."""
    return torch.stack([(~mask).any(2).sum(1), (~mask).any(1).sum(1)], 1).to(torch.int64)


def detection_masks(pred_masks: Tensor, size: tuple[int, int], canvas: tuple[int, int],
                    orig: tuple[int, int]) -> Tensor:
    """One image's ``pred_masks`` [Q, h, w] logits -> [Q, 1, H_o, W_o] uint8 (see the module doc)."""
    from detr_core.segmentation.postprocess import image_masks

    return image_masks(pred_masks, size, canvas, orig, threshold=MASK_THRESHOLD)


def scored_detections(prediction: dict[str, Tensor], evalset: Any) -> dict[str, Tensor]:
    """The detections of ``prediction`` that box and mask AP score on ``evalset``: all of them, or with a panoptic
    ground truth those of thing classes, as ``detrtool eval`` scores them (:func:`thing_detections`)."""
    truth = getattr(evalset, "panoptic", None)
    return prediction if truth is None else thing_detections(prediction, truth.is_thing)


def mask_metrics(logits: np.ndarray, boxes: np.ndarray, masks: np.ndarray, sizes: np.ndarray, *,
                 evalset: Any, backend: str = "faster") -> dict[str, float]:
    """The 12 COCO mask numbers (``mask_AP`` ...) of every query's mask over the eval set."""
    from detr_core.evaluation.coco import STAT_NAMES, CocoEvaluator
    from detr_core.postprocess import postprocess_tensors

    evaluator = CocoEvaluator(evalset.coco_gt, backend=backend, iou_type="segm")
    orig_sizes = evalset.orig_sizes
    scores, labels, pixel_boxes = postprocess_tensors(torch.from_numpy(logits), torch.from_numpy(boxes), orig_sizes)
    predictions = {}
    for i, image_id in enumerate(evalset.image_ids):
        segm = detection_masks(torch.from_numpy(masks[i]), _hw(sizes[i]), tuple(evalset.canvas), _hw(orig_sizes[i]))
        predictions[image_id] = scored_detections({"scores": scores[i], "labels": labels[i], "boxes": pixel_boxes[i],
                                                   "masks": segm}, evalset)
    evaluator.process(predictions)
    stats = evaluator.evaluate()
    return {f"mask_{name}": float(stats[name]) for name in STAT_NAMES}


def panoptic_metrics(logits: np.ndarray, masks: np.ndarray, sizes: np.ndarray, *, evalset: Any,
                     truth: PanopticTruth) -> dict[str, float]:
    """PQ, SQ, RQ (all, things, stuff) of the panoptic maps over the eval set."""
    from detr_core.evaluation.panoptic import PanopticEvaluator
    from detr_core.segmentation.postprocess import panoptic_predictions

    evaluator = PanopticEvaluator(truth.data, truth.png_dir)
    canvas = torch.tensor([list(evalset.canvas)], dtype=torch.int64)
    for i, image_id in enumerate(evalset.image_ids):
        outputs = {"pred_logits": torch.from_numpy(logits[i:i + 1]), "pred_masks": torch.from_numpy(masks[i:i + 1])}
        (pan,) = panoptic_predictions(outputs, torch.from_numpy(sizes[i:i + 1]), evalset.orig_sizes[i:i + 1],
                                      is_thing=truth.is_thing, threshold=PANOPTIC_THRESHOLD, input_sizes=canvas)
        evaluator.update(image_id, pan["segment_ids"], pan["segments_info"])
    result = evaluator.evaluate()
    return {key: float(result[key]) for key in PQ_KEYS}


def _hw(size: Any) -> tuple[int, int]:
    return int(size[0]), int(size[1])
