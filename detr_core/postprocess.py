"""From network outputs to detections in pixels of each image's original size.

``postprocess_tensors`` is pure tensor code (TorchScript-scriptable, ONNX-exportable): exports with
post-processing embed it. ``postprocess`` (and the module form ``PostProcess``) builds per-image dicts
with an optional score threshold and top-k.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert


def postprocess_tensors(pred_logits: Tensor, pred_boxes: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``pred_logits`` [B, Q, C+1], ``pred_boxes`` [B, Q, 4] normalised cx, cy, w, h, ``orig_sizes``
    [B, 2] (h, w) -> ``scores`` [B, Q], ``labels`` [B, Q] int64, ``boxes`` [B, Q, 4] x0, y0, x1, y1 pixels.

    Softmax over all classes, the "no object" class dropped, best real class per query.
    """
    prob = pred_logits.softmax(-1)[..., :-1]
    scores, labels = prob.max(-1)
    boxes = box_convert(pred_boxes, "cxcywh", "xyxy")
    height = orig_sizes[:, 0].to(boxes.dtype)
    width = orig_sizes[:, 1].to(boxes.dtype)
    scale = torch.stack([width, height, width, height], dim=1)
    return scores, labels, boxes * scale[:, None, :]


def postprocess(outputs: dict, target_sizes: Tensor, *, threshold: Optional[float] = None,
                top_k: Optional[int] = None) -> list[dict[str, Tensor]]:
    """Per image ``{"scores" [K], "labels" [K] int64, "boxes" [K, 4] x0, y0, x1, y1 pixels}``.

    ``outputs`` holds ``pred_logits`` [B, Q, C+1] and ``pred_boxes`` [B, Q, 4]; ``target_sizes`` is
    [B, 2] (h, w) of the original images. Every query is kept, in query order (K = Q), unless a score
    ``threshold`` (strictly greater) or ``top_k`` (highest scores first) selects fewer.
    """
    _check_selection(threshold=threshold, top_k=top_k)
    if tuple(target_sizes.shape) != (outputs["pred_logits"].shape[0], 2):
        raise ValueError(f"target_sizes must be [B, 2] (h, w), got {list(target_sizes.shape)}")
    scores, labels, boxes = postprocess_tensors(outputs["pred_logits"], outputs["pred_boxes"], target_sizes)
    results = []
    for s, lab, b in zip(scores, labels, boxes, strict=True):
        keep = torch.arange(len(s), device=s.device)
        if threshold is not None:
            keep = keep[s[keep] > threshold]
        if top_k is not None:
            keep = keep[s[keep].argsort(descending=True)[:top_k]]
        results.append({"scores": s[keep], "labels": lab[keep], "boxes": b[keep]})
    return results


def _check_selection(*, threshold: Optional[float], top_k: Optional[int]) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (a probability), got {threshold}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")


class PostProcess(nn.Module):
    """Module form of :func:`postprocess`: ``forward(outputs, target_sizes) -> list[dict]`` with the
    threshold and top-k fixed at construction."""

    def __init__(self, *, threshold: Optional[float] = None, top_k: Optional[int] = None) -> None:
        super().__init__()
        _check_selection(threshold=threshold, top_k=top_k)
        self.threshold = threshold
        self.top_k = top_k

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: Tensor) -> list[dict[str, Tensor]]:
        return postprocess(outputs, target_sizes, threshold=self.threshold, top_k=self.top_k)
