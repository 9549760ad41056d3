"""Hungarian matching of predictions to targets (scipy's ``linear_sum_assignment``).

``pred_logits`` [B, Q, C+1], ``pred_boxes`` [B, Q, 4] normalised cx, cy, w, h; targets: per image
``labels`` [N] int64 and ``boxes`` [N, 4] normalised cx, cy, w, h. The result is, per image, a pair
(query indices, target indices), int64, sorted by query index.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def check_boxes_xyxy(boxes: Tensor, what: str) -> None:
    """A degenerate box (x1 < x0 or y1 < y0, or non-finite) would give NaN GIoU: refuse it clearly."""
    if not torch.isfinite(boxes).all():
        raise FloatingPointError(f"{what} holds non-finite coordinates")
    if (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError(f"{what} holds degenerate boxes (x1 < x0 or y1 < y0)")


class HungarianMatcher(nn.Module):
    """cost = w_class * (-p[target class]) + w_bbox * L1(boxes) + w_giou * (-GIoU)."""

    def __init__(self, *, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        batch, queries = logits.shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(batch)]
        cost = self._cost(logits.flatten(0, 1), boxes.flatten(0, 1), targets).view(batch, queries, -1).cpu()
        if not torch.isfinite(cost).all():
            raise FloatingPointError("HungarianMatcher: the matching cost holds NaN or inf")
        indices = []
        for i, block in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(block[i].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def _cost(self, logits: Tensor, boxes: Tensor, targets: list[dict]) -> Tensor:
        """[B*Q, sum N] cost matrix of every prediction against every target of the batch."""
        labels = torch.cat([t["labels"] for t in targets])
        target_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes.dtype)
        prob = logits.float().softmax(-1)
        cost_class = -prob[:, labels]
        cost_bbox = torch.cdist(boxes.float(), target_boxes.float(), p=1)
        pred_xyxy = box_convert(boxes.float(), "cxcywh", "xyxy")
        target_xyxy = box_convert(target_boxes.float(), "cxcywh", "xyxy")
        check_boxes_xyxy(pred_xyxy, "predicted boxes")
        check_boxes_xyxy(target_xyxy, "target boxes")
        cost_giou = -generalized_box_iou(pred_xyxy, target_xyxy)
        return self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
