"""The DETR set criterion: Hungarian-matched classification and box losses, plus logged metrics.

Every loss reads ``outputs`` (``pred_logits`` [B, Q, C+1], ``pred_boxes`` [B, Q, 4] normalised
cx, cy, w, h, optional ``aux_outputs``) and ``targets`` (per image ``labels`` [N], ``boxes`` [N, 4]).
Losses of the i-th auxiliary decoder layer carry the suffix ``_{i}``. The ``masks`` loss (segmentation)
also reads ``pred_masks`` [B, Q, h, w] logits and per image ``masks`` bool [N, H_i, W_i], on the last
decoder layer only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from detr_core.config import LossConfig
from detr_core.matcher import HungarianMatcher, check_boxes_xyxy

LOSSES = ("labels", "boxes", "cardinality", "masks")
#: The losses of a detector; a segmentation model adds "masks".
DETECTION_LOSSES = ("labels", "boxes", "cardinality")
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


class SetCriterion(nn.Module):
    """``forward(outputs, targets) -> dict`` of losses (``loss_ce``, ``loss_bbox``, ``loss_giou``) and
    metrics (``class_error`` in %, ``cardinality_error``), for the final and every auxiliary layer; with
    the ``masks`` loss also ``loss_mask`` and ``loss_dice``, for the final layer only."""

    def __init__(self, *, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float],
                 eos_coef: float = 0.1, losses: tuple[str, ...] = DETECTION_LOSSES) -> None:
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
        losses = self._layer_losses(outputs, targets, num_boxes, suffix="", last=True)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(self._layer_losses(aux, targets, num_boxes, suffix=f"_{i}", last=False))
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
                      last: bool) -> dict[str, Tensor]:
        """One decoder layer's losses; the last layer also logs metrics and has the masks loss."""
        indices = self.matcher(outputs, targets)
        losses: dict[str, Tensor] = {}
        if "labels" in self.losses:
            losses.update(self.loss_labels(outputs, targets, indices, log=last))
        if "boxes" in self.losses:
            losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        if "cardinality" in self.losses:
            losses.update(self.loss_cardinality(outputs, targets))
        if "masks" in self.losses and last:
            losses.update(self.loss_masks(outputs, targets, indices, num_boxes))
        return {k + suffix: v for k, v in losses.items()}

    def loss_labels(self, outputs: dict, targets: list[dict], indices: list, *, log: bool) -> dict[str, Tensor]:
        """Cross-entropy over all queries; unmatched queries target "no object" (weight eos_coef)."""
        logits = outputs["pred_logits"]
        batch_idx, query_idx = _matched_queries(indices)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)]).to(logits.device)
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
        target = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices, strict=True)]).to(pred.device, pred.dtype)
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

    def loss_masks(self, outputs: dict, targets: list[dict], indices: list, num_boxes: Tensor) -> dict[str, Tensor]:
        """Sigmoid focal (mean over pixels) and dice loss of matched masks, each summed and divided by
        ``num_boxes``.

        ``pred_masks``: [B, Q, h, w] logits (or ``mask_predictor``, a training forward's
        :class:`~detr_core.models.segmentation.MaskPredictor`: the same logits of the matched queries alone);
        ``targets[i]["masks"]``: bool [N_i, H_i, W_i]. Target masks are
        zero-padded bottom/right to the batch's largest (H, W) (over all targets, empty images included);
        the matched predictions are upsampled bilinearly to that size, so the focal mean runs over it.
        """
        batch_idx, query_idx = _matched_queries(indices)
        if "pred_masks" in outputs:
            pred = outputs["pred_masks"][batch_idx, query_idx]
        elif "mask_predictor" in outputs:  # a training forward: only the matched queries' masks are computed
            pred = outputs["mask_predictor"](batch_idx, query_idx)
        else:
            raise ValueError("the masks loss needs outputs['pred_masks'] [B, Q, h, w] (a segmentation model)")
        target = padded_target_masks(targets, indices).to(pred.device, pred.dtype)
        pred = F.interpolate(pred[:, None], size=target.shape[-2:], mode="bilinear", align_corners=False)
        pred, target = pred.flatten(1), target.flatten(1)
        focal = sigmoid_focal_loss(pred, target, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="none")
        return {"loss_mask": focal.mean(1).sum() / num_boxes, "loss_dice": dice_loss(pred, target).sum() / num_boxes}


def _matched_queries(indices: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return batch_idx, query_idx


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)`` per row, p = sigmoid(logits).

    logits, target: [M, P] (P pixels, target 0/1) -> [M]."""
    prob = logits.sigmoid()
    overlap = 2 * (prob * target).sum(1)
    return 1 - (overlap + 1) / (prob.sum(1) + target.sum(1) + 1)


def padded_target_masks(targets: list[dict], indices: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The matched target masks, each zero-padded bottom/right to the batch's largest (H, W).

    targets[i]["masks"]: bool [N_i, H_i, W_i]; indices: per image (query_idx, target_idx) -> float [M, H, W]
    in the order of :func:`_matched_queries`."""
    masks = [_target_masks(t, i) for i, t in enumerate(targets)]
    height, width = max(m.shape[-2] for m in masks), max(m.shape[-1] for m in masks)
    return torch.cat([F.pad(m[j].float(), (0, width - m.shape[-1], 0, height - m.shape[-2]))
                      for m, (_, j) in zip(masks, indices, strict=True)])


def _target_masks(target: dict, index: int) -> Tensor:
    masks = target.get("masks")
    if masks is None:
        raise ValueError(f"the masks loss needs targets[{index}]['masks'] (bool [N, H, W])")
    if masks.ndim != 3 or masks.shape[0] != len(target["labels"]):
        raise ValueError(f"targets[{index}]['masks'] has shape {list(masks.shape)}: expected [N, H, W] "
                         f"with N = {len(target['labels'])} labels")
    return masks


def _top1_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy in percent (0 when there is nothing to classify)."""
    if labels.numel() == 0:
        return torch.zeros((), device=logits.device)
    return (logits.argmax(-1) == labels).float().mean() * 100


def build_weight_dict(config: LossConfig, *, dec_layers: int, aux_loss: bool,
                      masks: bool = False) -> dict[str, float]:
    """Weights of the trained losses, repeated with suffix ``_{i}`` for each auxiliary layer. With ``masks``
    also ``loss_mask`` and ``loss_dice`` (their ``_{i}`` copies too, as the reference's weight dict has,
    though auxiliary layers get no masks loss: :func:`weighted_total` sums only the losses present)."""
    base = {"loss_ce": config.ce_loss_coef, "loss_bbox": config.bbox_loss_coef, "loss_giou": config.giou_loss_coef}
    if masks:
        base.update({"loss_mask": config.mask_loss_coef, "loss_dice": config.dice_loss_coef})
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


def build_criterion(config: LossConfig, *, num_classes: int, dec_layers: int, aux_loss: bool,
                    masks: bool = False) -> SetCriterion:
    """The matcher and criterion a ``LossConfig`` describes; ``masks`` adds the focal + dice masks loss."""
    matcher = HungarianMatcher(cost_class=config.set_cost_class, cost_bbox=config.set_cost_bbox,
                               cost_giou=config.set_cost_giou)
    weight_dict = build_weight_dict(config, dec_layers=dec_layers, aux_loss=aux_loss, masks=masks)
    return SetCriterion(num_classes=num_classes, matcher=matcher, eos_coef=config.eos_coef, weight_dict=weight_dict,
                        losses=LOSSES if masks else DETECTION_LOSSES)
