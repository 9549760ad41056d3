"""Accuracy of a runtime on a validation set, all rows prepared and scored the same way.

:class:`EvalSet` holds the val images (uint8, original size) and their COCO ground truth; its
``batches`` are made by ``exporters.prepare.prepare`` with the benchmark's canvas and static batch
(the last batch is filled with black images whose outputs are dropped). :func:`collect_outputs` runs a
runtime over them; :func:`coco_metrics` scores raw outputs through ``detr_core.evaluation.coco``;
:func:`outputs_max_abs_diff` and :func:`agreement_percent` compare a runtime's outputs with eager's.
A segmentation model's outputs also carry ``masks``: :func:`accuracy_metrics` adds mask AP and, with a
panoptic ground truth, PQ (:mod:`bench.segm`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detr_core.postprocess import postprocess_tensors
from exporters.compare import Detections, detection_agreement, max_abs_diff

logger = logging.getLogger(__name__)

Runner = Callable[[Tensor, Tensor], tuple[Tensor, ...]]


@dataclass
class PreparedBatch:
    images: Tensor
    mask: Tensor
    orig_sizes: Tensor
    count: int  # real images first; the rest fill the static batch


@dataclass
class EvalSet:
    """Val images (uint8 [3, H, W]), their COCO image ids and ground truth, and the input rule."""

    images: list[Tensor]
    image_ids: list[int]
    coco_gt: Any
    canvas: tuple[int, int]
    batch_size: int = 1
    size: int | None = None
    max_size: int | None = None
    class_map: Any = None  # a ResolvedClassMap: predictions scored in the dataset's ids (unmapped dropped)
    panoptic: Any = None  # a bench.segm.PanopticTruth: PQ of a segmentation model's rows

    def __len__(self) -> int:
        return len(self.images)

    def prepare(self, pixels: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        from exporters.prepare import prepare

        return prepare(pixels, canvas=self.canvas, size=self.size or min(self.canvas),
                       max_size=self.max_size or max(self.canvas), batch_size=self.batch_size)

    def batches(self) -> Iterator[PreparedBatch]:
        for start in range(0, len(self.images), self.batch_size):
            chunk = self.images[start:start + self.batch_size]
            images, mask, orig = self.prepare(chunk)
            yield PreparedBatch(images, mask, orig, len(chunk))

    @property
    def orig_sizes(self) -> Tensor:
        return torch.tensor([[int(im.shape[1]), int(im.shape[2])] for im in self.images], dtype=torch.int64)


@dataclass
class RawOutputs:
    """Per-image raw outputs in eval-set order: ``logits`` [N, Q, C+1], ``boxes`` [N, Q, 4] (float32); a
    segmentation model's ``masks`` [N, Q, h, w] logits over the canvas and each image's size as fed,
    ``sizes`` [N, 2] int64 (None for a detector)."""

    logits: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray | None = None
    sizes: np.ndarray | None = None


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def collect_outputs(runner: Runner, evalset: EvalSet) -> RawOutputs:
    """Run ``runner`` over every batch; keep the real images' outputs (masks too when it returns them)."""
    from bench.segm import fed_sizes

    logits, boxes, masks, sizes = [], [], [], []
    for batch in evalset.batches():
        out = runner(batch.images, batch.mask)
        logits.append(_numpy(out[0])[: batch.count])
        boxes.append(_numpy(out[1])[: batch.count])
        if len(out) > 2:
            masks.append(_numpy(out[2])[: batch.count])
            sizes.append(fed_sizes(batch.mask)[: batch.count].numpy())
    extra = (np.concatenate(masks), np.concatenate(sizes)) if masks else (None, None)
    return RawOutputs(np.concatenate(logits), np.concatenate(boxes), *extra)


def _detections(outputs: RawOutputs, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return postprocess_tensors(torch.from_numpy(outputs.logits), torch.from_numpy(outputs.boxes), orig_sizes)


def coco_metrics(outputs: RawOutputs, evalset: EvalSet, *, backend: str = "faster") -> dict[str, float]:
    """The 12 COCO box numbers (0..1) of ``outputs`` over the eval set, every query scored."""
    from detr_core.evaluation.coco import STAT_NAMES, CocoEvaluator

    evaluator: Any = CocoEvaluator(evalset.coco_gt, backend=backend)
    if evalset.class_map is not None:
        from detr_core.evaluation.class_mapped import ClassMappedEvaluator

        evaluator = ClassMappedEvaluator(evaluator, evalset.class_map)
    from bench.segm import scored_detections

    scores, labels, boxes = _detections(outputs, evalset.orig_sizes)
    evaluator.process({image_id: scored_detections({"scores": scores[i], "labels": labels[i], "boxes": boxes[i]},
                                                   evalset) for i, image_id in enumerate(evalset.image_ids)})
    metrics = evaluator.evaluate()
    return {name: float(metrics[name]) for name in STAT_NAMES}


def accuracy_metrics(outputs: RawOutputs, evalset: EvalSet, *, backend: str = "faster") -> dict[str, float]:
    """Box AP (:func:`coco_metrics`); with masks also the 12 ``mask_*`` numbers and, when the eval set has a
    panoptic ground truth, ``PQ``/``SQ``/``RQ`` (+ ``_th``/``_st``) — all 0..1 (:mod:`bench.segm`)."""
    from bench.segm import mask_metrics, panoptic_metrics

    metrics = coco_metrics(outputs, evalset, backend=backend)
    if outputs.masks is None:
        return metrics
    metrics.update(mask_metrics(outputs.logits, outputs.boxes, outputs.masks, outputs.sizes, evalset=evalset,
                                backend=backend))
    if evalset.panoptic is not None:
        metrics.update(panoptic_metrics(outputs.logits, outputs.masks, outputs.sizes, evalset=evalset,
                                        truth=evalset.panoptic))
    return metrics


def outputs_max_abs_diff(a: RawOutputs, b: RawOutputs) -> float:
    """:func:`exporters.compare.max_abs_diff` over logits and boxes and, when both have masks, the masks' over
    max(1, max |a masks|) (as export validation: a trained mask head's logits reach ±65 at 128 pixels, and fp32
    rounding of its large activations moves them by ~1e-3, 2e-5 of that scale)."""
    diffs = [max_abs_diff(torch.from_numpy(a.logits), torch.from_numpy(b.logits)),
             max_abs_diff(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes))]
    if a.masks is not None and b.masks is not None:
        scale = max(1.0, float(np.abs(a.masks).max(initial=0.0)))
        diffs.append(max_abs_diff(torch.from_numpy(a.masks), torch.from_numpy(b.masks)) / scale)
    return float(max(diffs))


def agreement_percent(reference: RawOutputs, other: RawOutputs, orig_sizes: Tensor, *,
                      threshold: float = 0.5, iou: float = 0.9) -> float:
    """:func:`exporters.compare.detection_agreement` as a percentage: of the queries detected (score >
    ``threshold``) by either runtime, those both detect with the same label and boxes overlapping by IoU >=
    ``iou``; 100 when neither detects anything."""
    union, agree = detection_agreement(Detections(*_detections(reference, orig_sizes)),
                                       Detections(*_detections(other, orig_sizes)), threshold=threshold, iou=iou)
    if union == 0:
        return 100.0
    return 100.0 * float(agree) / float(union)
