"""Segmentation post-processing: per-detection masks (``PostProcessSegm``) and panoptic maps
(``panoptic_predictions`` / ``PostProcessPanoptic``), the same maths as the reference DETR.

Size contracts (all [B, 2] int tensors of (h, w)):
* ``orig_sizes`` / ``target_sizes``: each image's original size (the output size).
* ``max_sizes`` / ``processed_sizes``: each image's size as fed to the model, without padding.
* ``input_sizes``: the padded canvas the model saw (``images.shape[-2:]`` per image).

``pred_masks`` is [B, Q, h, w] mask logits at stride s of the padded canvas (padding included).

Padding and the panoptic map: the reference upsamples the whole padded-canvas mask to each image's
processed size, so in a padded batch every map is stretched (an image padded from 96 to 120 rows has its
96 rows squeezed out of 120 rows of mask). Passing ``input_sizes`` takes the correct path: upsample to the
canvas, then crop the image's own region, as ``PostProcessSegm`` does. detrtool callers pass
``input_sizes``; ``input_sizes=None`` reproduces the reference bit for bit (identical when unpadded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_core.segmentation.panoptic_format import resize_nearest

SMALL_SEGMENT_AREA = 4  # segments of at most this many pixels (at the target size) are dropped


def segm_masks(pred_masks: Tensor, orig_sizes: Tensor, max_sizes: Tensor, *,
               threshold: float = 0.5) -> list[Tensor]:
    """``pred_masks`` [B, Q, h, w] logits -> per image ``masks`` [Q, 1, H, W] uint8 at ``orig_sizes``.

    Bilinear (align_corners=False) to the batch's largest ``max_sizes`` (h, w), sigmoid > ``threshold``,
    each cropped to its own ``max_sizes``, then nearest to its ``orig_sizes``."""
    _check_sizes(pred_masks, orig_sizes=orig_sizes, max_sizes=max_sizes)
    canvas = tuple(int(v) for v in max_sizes.max(0).values)
    binary = F.interpolate(pred_masks, size=canvas, mode="bilinear", align_corners=False).sigmoid() > threshold
    results = []
    for masks, (h, w), orig in zip(binary.cpu(), max_sizes.tolist(), orig_sizes.tolist(), strict=True):
        cropped = masks[:, None, :h, :w].float()
        results.append(F.interpolate(cropped, size=tuple(orig), mode="nearest").to(torch.uint8))
    return results


class PostProcessSegm(nn.Module):
    """Adds ``masks`` [Q, 1, H, W] uint8 (see :func:`segm_masks`) to the box post-processing results
    (``detr_core.postprocess.postprocess`` with every query kept, K = Q, in query order)."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    @torch.no_grad()
    def forward(self, results: list[dict[str, Tensor]], outputs: Mapping[str, Tensor], orig_sizes: Tensor,
                max_sizes: Tensor) -> list[dict[str, Tensor]]:
        masks = segm_masks(outputs["pred_masks"], orig_sizes, max_sizes, threshold=self.threshold)
        for result, mask in zip(results, masks, strict=True):
            if len(result["scores"]) != len(mask):
                raise ValueError(f"results hold {len(result['scores'])} detections, pred_masks {len(mask)} "
                                 "queries: keep every query in the box post-processing")
            result["masks"] = mask
        return results


@torch.no_grad()
def panoptic_predictions(outputs: Mapping[str, Tensor], processed_sizes: Tensor,
                         target_sizes: Optional[Tensor] = None, *, is_thing: Mapping[int, bool],
                         threshold: float = 0.85, input_sizes: Optional[Tensor] = None) -> list[dict[str, Any]]:
    """Per image ``{"segment_ids": [H, W] int64, "segments_info": [{id, isthing, category_id, area}]}``
    at ``target_sizes`` (default ``processed_sizes``).

    ``outputs``: ``pred_logits`` [B, Q, C+1], ``pred_masks`` [B, Q, h, w] logits. A query is kept when its
    best class is not "no object" and its softmax score > ``threshold``; every pixel goes to the kept query
    of highest mask logit (softmax-argmax over queries), queries of one stuff class share the first one's
    id, the map is resized by PIL NEAREST, and segments of area <= 4 are dropped until none is left (the
    assignment re-run without them and without merging, as the reference; the merged stuff members, left
    with area 0, go in the first round, their pixels to the best remaining query). Segment ids are the
    indices 0..K-1 of the surviving queries (0 is a segment, not void); no kept query: an all-zero map
    with no segments. ``input_sizes`` [B, 2] (the padded canvas): crop the padding first (module doc).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (a probability), got {threshold}")
    target_sizes = processed_sizes if target_sizes is None else target_sizes
    _check_sizes(outputs["pred_masks"], processed_sizes=processed_sizes, target_sizes=target_sizes,
                 input_sizes=input_sizes)  # fmt: skip
    num_classes = outputs["pred_logits"].shape[-1] - 1
    results = []
    for index, (logits, masks) in enumerate(zip(outputs["pred_logits"], outputs["pred_masks"], strict=True)):
        scores, labels = logits.softmax(-1).max(-1)
        keep = (labels != num_classes) & (scores > threshold)
        canvas = None if input_sizes is None else _pair(input_sizes[index])
        size, target = _pair(processed_sizes[index]), _pair(target_sizes[index])
        mask_logits = upsample_query_masks(masks[keep], size, canvas)
        results.append(_panoptic_image(mask_logits, labels[keep].tolist(), size, target, is_thing))
    return results


class PostProcessPanoptic(nn.Module):
    """Module form of :func:`panoptic_predictions` with ``is_thing`` (class id -> bool) and the score
    ``threshold`` fixed at construction."""

    def __init__(self, is_thing: Mapping[int, bool], threshold: float = 0.85) -> None:
        super().__init__()
        self.is_thing = dict(is_thing)
        self.threshold = threshold

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, Tensor], processed_sizes: Tensor,
                target_sizes: Optional[Tensor] = None, input_sizes: Optional[Tensor] = None) -> list[dict[str, Any]]:
        return panoptic_predictions(outputs, processed_sizes, target_sizes, is_thing=self.is_thing,
                                    threshold=self.threshold, input_sizes=input_sizes)  # fmt: skip


def upsample_query_masks(masks: Tensor, size: tuple[int, int], canvas: Optional[tuple[int, int]]) -> Tensor:
    """``masks`` [K, h, w] logits of one image -> [K, H*W] logits at ``size`` (H, W): the whole canvas
    stretched to ``size`` (``canvas`` None, the reference) or bilinear to ``canvas`` (the padded input
    size) and cropped to ``size`` (the image's own region)."""
    if canvas is None:
        return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].flatten(1)
    upsampled = F.interpolate(masks[:, None], size=canvas, mode="bilinear", align_corners=False)[:, 0]
    return upsampled[:, : size[0], : size[1]].flatten(1)


def _panoptic_image(mask_logits: Tensor, labels: list[int], shape: tuple[int, int], target: tuple[int, int],
                    is_thing: Mapping[int, bool]) -> dict[str, Any]:
    """One image's map and segments from its kept queries' [K, h*w] mask logits at ``shape`` (h, w)."""
    stuff_groups = _stuff_groups(labels, is_thing)
    segment_ids, areas = _assign(mask_logits, shape, target, stuff_groups)
    while labels:
        small = [area <= SMALL_SEGMENT_AREA for area in areas]
        if not any(small):
            break
        kept = [i for i, is_small in enumerate(small) if not is_small]
        mask_logits, labels = mask_logits[kept], [labels[i] for i in kept]
        segment_ids, areas = _assign(mask_logits, shape, target, [])
    info = [{"id": i, "isthing": bool(is_thing[c]), "category_id": int(c), "area": int(a)}
            for i, (c, a) in enumerate(zip(labels, areas, strict=True))]  # fmt: skip
    return {"segment_ids": segment_ids, "segments_info": info}


def _assign(mask_logits: Tensor, shape: tuple[int, int], target: tuple[int, int],
            stuff_groups: list[list[int]]) -> tuple[Tensor, list[int]]:
    """Id map [H, W] int64 at ``target`` and the area of each query id 0..K-1 in it."""
    if len(mask_logits) == 0:
        ids = torch.zeros(shape, dtype=torch.int64)
    else:
        ids = mask_logits.transpose(0, 1).softmax(-1).argmax(-1).view(shape).cpu()
    for group in stuff_groups:
        for member in group[1:]:
            ids[ids == member] = group[0]
    resized = torch.from_numpy(resize_nearest(ids, target))
    areas = torch.bincount(resized.flatten(), minlength=len(mask_logits))[: len(mask_logits)].tolist()
    return resized, areas


def _stuff_groups(labels: list[int], is_thing: Mapping[int, bool]) -> list[list[int]]:
    """Query indices of each stuff class with more than one kept query, in query order."""
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if label not in is_thing:
            raise ValueError(f"is_thing has no entry for predicted class {label}")
        if not is_thing[label]:
            groups.setdefault(label, []).append(index)
    return [group for group in groups.values() if len(group) > 1]


def _pair(size: Tensor) -> tuple[int, int]:
    return int(size[0]), int(size[1])


def _check_sizes(pred_masks: Tensor, **sizes: Optional[Tensor]) -> None:
    if pred_masks.dim() != 4:
        raise ValueError(f"pred_masks must be [B, Q, h, w], got {list(pred_masks.shape)}")
    for name, value in sizes.items():
        if value is not None and tuple(value.shape) != (pred_masks.shape[0], 2):
            raise ValueError(f"{name} must be [B, 2] (h, w) with B = {pred_masks.shape[0]}, got {list(value.shape)}")


def image_masks(masks: Tensor, size: tuple[int, int], canvas: tuple[int, int], orig_size: tuple[int, int], *,
                threshold: float = 0.5) -> Tensor:
    """One image's mask logits [K, h, w] over the padded ``canvas`` -> [K, 1, H_o, W_o] uint8 at ``orig_size``:
    bilinear to the canvas, cropped to the image's ``size`` (as fed), sigmoid > ``threshold``, nearest to the
    original size. ``PostProcessSegm``'s maths with the padding cropped first: an image scores the same alone
    and in a padded batch (what eval, predict and bench use)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 1, *orig_size), dtype=torch.uint8)
    binary = upsample_query_masks(masks.float(), size, canvas).view(-1, 1, *size).sigmoid() > threshold
    return F.interpolate(binary.float(), size=orig_size, mode="nearest").to(torch.uint8)
