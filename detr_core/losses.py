"""The DETR set criterion: Hungarian-matched classification and box losses, plus logged metrics.

Every loss reads ``outputs`` (``pred_logits`` [B, Q, C+1], ``pred_boxes`` [B, Q, 4] normalised
cx, cy, w, h, optional ``aux_outputs``) and ``targets`` (per image ``labels`` [N], ``boxes`` [N, 4]).
Losses of the i-th auxiliary decoder layer carry the suffix ``_{i}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from detr_core.config import LossConfig
from detr_core.matcher import HungarianMatcher, check_boxes_xyxy

LOSSES = ("labels", "boxes", "cardinality")


class SetCriterion(nn.Module):
    """``forward(outputs, targets) -> dict`` of losses (``loss_ce``, ``loss_bbox``, ``loss_giou``) and
    metrics (``class_error`` in %, ``cardinality_error``), for the final and every auxiliary layer."""

    def __init__(self, *, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float],
                 eos_coef: float = 0.1, losses: tuple[str, ...] = LOSSES) -> None:
        super().__init__()
        unknown = set(losses) - set(LOSSES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; choose from {LOSSES}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        num_boxes = self.num_boxes(targets, outputs["pred_logits"].device)
        losses = self._layer_losses(outputs, targets, num_boxes, suffix="", log=True)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(self._layer_losses(aux, targets, num_boxes, suffix=f"_{i}", log=False))
        return losses

    @staticmethod
    def num_boxes(targets: list[dict], device: torch.device) -> Tensor:
        """Targets in the batch, averaged over processes when distributed (at least 1)."""
        count = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
            count = count / torch.distributed.get_world_size()
        return count.clamp(min=1).squeeze(0)

    def _layer_losses(self, outputs: dict, targets: list[dict], num_boxes: Tensor, *, suffix: str,
                      log: bool) -> dict[str, Tensor]:
        indices = self.matcher(outputs, targets)
        losses: dict[str, Tensor] = {}
        if "labels" in self.losses:
            losses.update(self.loss_labels(outputs, targets, indices, log=log))
        if "boxes" in self.losses:
            losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        if "cardinality" in self.losses:
            losses.update(self.loss_cardinality(outputs, targets))
        return {k + suffix: v for k, v in losses.items()}

    def loss_labels(self, outputs: dict, targets: list[dict], indices: list, *, log: bool) -> dict[str, Tensor]:
        """Cross-entropy over all queries; unmatched queries target "no object" (weight eos_coef)."""
        logits = outputs["pred_logits"]
        batch_idx, query_idx = _matched_queries(indices)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, query_idx] = matched_labels
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight.to(logits.dtype))
        losses = {"loss_ce": loss_ce}
        if log:
            losses["class_error"] = 100 - _top1_accuracy(logits[batch_idx, query_idx].detach(), matched_labels)
        return losses

    def loss_boxes(self, outputs: dict, targets: list[dict], indices: list, num_boxes: Tensor) -> dict[str, Tensor]:
        """L1 and GIoU between matched boxes, summed and divided by ``num_boxes``."""
        batch_idx, query_idx = _matched_queries(indices)
        pred = outputs["pred_boxes"][batch_idx, query_idx]
        target = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(pred.device, pred.dtype)
        loss_bbox = F.l1_loss(pred, target, reduction="none").sum() / num_boxes
        pred_xyxy, target_xyxy = box_convert(pred, "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy")
        check_boxes_xyxy(pred_xyxy.detach(), "predicted boxes")
        giou = torch.diag(generalized_box_iou(pred_xyxy, target_xyxy))
        return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}

    @torch.no_grad()
    def loss_cardinality(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """Absolute error in the number of predicted objects (not "no object"); logged, not trained."""
        logits = outputs["pred_logits"]
        predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        wanted = torch.as_tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        return {"cardinality_error": F.l1_loss(predicted, wanted)}


def _matched_queries(indices: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return batch_idx, query_idx


def _top1_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy in percent (0 when there is nothing to classify)."""
    if labels.numel() == 0:
        return torch.zeros((), device=logits.device)
    return (logits.argmax(-1) == labels).float().mean() * 100


def build_weight_dict(config: LossConfig, *, dec_layers: int, aux_loss: bool) -> dict[str, float]:
    """Weights of the trained losses, repeated with suffix ``_{i}`` for each auxiliary layer."""
    base = {"loss_ce": config.ce_loss_coef, "loss_bbox": config.bbox_loss_coef, "loss_giou": config.giou_loss_coef}
    weights = dict(base)
    if aux_loss:
        for i in range(dec_layers - 1):
            weights.update({f"{k}_{i}": v for k, v in base.items()})
    return weights


def weighted_total(losses: dict[str, Tensor], weight_dict: dict[str, float]) -> Tensor:
    """The training objective: the weighted sum of the losses that have a weight."""
    total = sum(losses[k] * w for k, w in weight_dict.items() if k in losses)
    if not isinstance(total, Tensor):
        raise ValueError(f"none of the losses {sorted(losses)} has a weight in {sorted(weight_dict)}")
    if not torch.isfinite(total):
        bad = [k for k in weight_dict if k in losses and not torch.isfinite(losses[k])]
        raise FloatingPointError(f"loss is not finite: {bad or 'weighted total'}")
    return total


def build_criterion(config: LossConfig, *, num_classes: int, dec_layers: int, aux_loss: bool) -> SetCriterion:
    """The matcher and criterion a ``LossConfig`` describes."""
    matcher = HungarianMatcher(cost_class=config.set_cost_class, cost_bbox=config.set_cost_bbox,
                               cost_giou=config.set_cost_giou)
    return SetCriterion(num_classes=num_classes, matcher=matcher, eos_coef=config.eos_coef,
                        weight_dict=build_weight_dict(config, dec_layers=dec_layers, aux_loss=aux_loss))
