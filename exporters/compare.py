"""Comparing an artifact's outputs with eager: max |Δ| of raw outputs and agreement of detection sets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from detr_core.postprocess import postprocess_tensors

IOU_MIN = 0.99


@dataclass(frozen=True)
class Detections:
    """Per-query detections of a batch: ``scores`` [B, Q], ``labels`` [B, Q], ``boxes`` [B, Q, 4] pixels."""

    scores: Tensor
    labels: Tensor
    boxes: Tensor


def detections_of(outputs: dict[str, Tensor], orig_sizes: Tensor) -> Detections:
    """From raw (``pred_logits``/``pred_boxes``) or post-processed (``scores``/``labels``/``boxes``) outputs."""
    if "scores" in outputs:
        return Detections(outputs["scores"].float(), outputs["labels"].long(), outputs["boxes"].float())
    scores, labels, boxes = postprocess_tensors(outputs["pred_logits"].float(), outputs["pred_boxes"].float(),
                                                orig_sizes)
    return Detections(scores, labels, boxes)


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    """max |a - b| in float64 (NaN anywhere counts as infinite)."""
    diff = (a.double() - b.double()).abs()
    return float("inf") if torch.isnan(diff).any() else float(diff.max()) if diff.numel() else 0.0


def output_deltas(ref: dict[str, Tensor], out: dict[str, Tensor], orig_sizes: Tensor) -> tuple[float, float]:
    """(max |Δ| logits or scores, max |Δ| boxes normalised to each image's size)."""
    if "pred_logits" in ref:
        return max_abs_diff(ref["pred_logits"], out["pred_logits"]), max_abs_diff(ref["pred_boxes"], out["pred_boxes"])
    scale = orig_sizes.flip(1).repeat(1, 2).to(torch.float64)[:, None, :]
    boxes = max_abs_diff(ref["boxes"].double() / scale, out["boxes"].double() / scale)
    return max_abs_diff(ref["scores"], out["scores"]), boxes


def detection_agreement(ref: Detections, out: Detections, *, threshold: float,
                        iou: float = IOU_MIN) -> tuple[int, int]:
    """(detections in the union of both sets above ``threshold``, those that agree: both above it,
    same label, IoU >= ``iou``). Queries are matched by index (the same query of the same image)."""
    union = agree = 0
    for b in range(ref.scores.shape[0]):
        keep_ref, keep_out = ref.scores[b] > threshold, out.scores[b] > threshold
        both = keep_ref & keep_out & (ref.labels[b] == out.labels[b])
        union += int((keep_ref | keep_out).sum())
        idx = torch.nonzero(both).flatten()
        if idx.numel():
            overlap = box_iou(ref.boxes[b, idx], out.boxes[b, idx]).diagonal()
            agree += int((overlap >= iou).sum())
    return union, agree
