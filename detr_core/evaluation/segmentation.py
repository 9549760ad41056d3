"""Evaluating a panoptic model in one pass: box AP, mask AP and, against a panoptic ground truth, PQ.

:func:`segmentation_predictions` turns a batch's raw outputs into per-image predictions at the original
size: the boxes of every query (``detr_core.postprocess``), their binary ``masks`` [Q, 1, H, W] uint8
(``PostProcessSegm``'s maths, upsampled on the padded canvas the model saw and cropped to each image, so a
padded batch scores as the images one by one) and the ``panoptic`` map (``segment_ids`` [H, W] int64, ids
1..K, 0 void; ``segments_info``). :class:`SegmentationEvaluator` feeds them to a bbox and a segm
:class:`~detr_core.evaluation.coco.CocoEvaluator` and, when given, a
:class:`~detr_core.evaluation.panoptic.PanopticEvaluator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor

from detr_core.data.coco import _stated_hw
from detr_core.data.coco_masks import segmentation_problem
from detr_core.postprocess import postprocess
from detr_core.segmentation.panoptic_format import one_based
from detr_core.segmentation.postprocess import image_masks, panoptic_predictions

MASK_THRESHOLD = 0.5  # sigmoid probability above which a mask pixel is on (the reference's PostProcessSegm)
PANOPTIC_THRESHOLD = 0.85  # class score above which a query enters the panoptic map (the reference's)


def thing_detections(prediction: Mapping[str, Any], is_thing: Mapping[int, bool]) -> dict[str, Tensor]:
    """``prediction``'s ``scores``, ``labels``, ``boxes`` (and ``masks``) of thing classes (a class absent from
    ``is_thing`` counts as a thing): box AP and mask AP are COCO's instance metrics, stuff is scored by PQ."""
    keep = torch.tensor([is_thing.get(int(label), True) for label in prediction["labels"]], dtype=torch.bool)
    return {k: v[keep] for k, v in prediction.items() if k in ("scores", "labels", "boxes", "masks")}


def image_sizes(targets: list[dict[str, Tensor]], key: str) -> Tensor:
    """[B, 2] (h, w) of ``targets[i][key]`` (``size``: as fed, ``orig_size``: original)."""
    return torch.stack([t[key].to("cpu") for t in targets])


def canvas_masks(pred_masks: Tensor, sizes: Tensor, orig_sizes: Tensor, canvas: tuple[int, int], *,
                 threshold: float = MASK_THRESHOLD) -> list[Tensor]:
    """``pred_masks`` [B, Q, h, w] logits over the padded ``canvas`` (H, W) -> per image [Q, 1, H_o, W_o] uint8
    (:func:`~detr_core.segmentation.postprocess.image_masks`). With an unpadded canvas this is exactly the
    reference's ``PostProcessSegm``."""
    return [image_masks(masks, tuple(size), canvas, tuple(orig), threshold=threshold)
            for masks, size, orig in zip(pred_masks.cpu(), sizes.tolist(), orig_sizes.tolist(), strict=True)]


def segmentation_predictions(outputs: Mapping[str, Tensor], targets: list[dict[str, Tensor]],
                             canvas: tuple[int, int], *, is_thing: Mapping[int, bool],
                             mask_threshold: float = MASK_THRESHOLD, panoptic_threshold: float = PANOPTIC_THRESHOLD,
                             panoptic: bool = True) -> list[dict[str, Any]]:
    """Per image ``scores``, ``labels``, ``boxes`` (every query), ``masks`` [Q, 1, H, W] uint8 and, with
    ``panoptic``, ``panoptic`` (:func:`one_based` ids) at the original size; ``canvas`` is the padded input's
    (H, W). ``targets`` need ``size`` and ``orig_size``."""
    sizes, orig_sizes = image_sizes(targets, "size"), image_sizes(targets, "orig_size")
    results = postprocess({k: v for k, v in outputs.items() if k in ("pred_logits", "pred_boxes")}, orig_sizes)
    masks = canvas_masks(outputs["pred_masks"], sizes, orig_sizes, canvas, threshold=mask_threshold)
    for result, mask in zip(results, masks, strict=True):
        result["masks"] = mask
    if panoptic:
        input_sizes = torch.tensor([list(canvas)] * len(targets), dtype=torch.int64)
        maps = panoptic_predictions({k: outputs[k].float().cpu() for k in ("pred_logits", "pred_masks")}, sizes,
                                    orig_sizes, is_thing=is_thing, threshold=panoptic_threshold,
                                    input_sizes=input_sizes)
        for result, pan in zip(results, maps, strict=True):
            result["panoptic"] = one_based(pan)
    return results


def mask_ground_truth_problem(gt: Mapping[str, Any]) -> str | None:
    """Why COCOeval cannot score masks against the COCO dict ``gt``: an annotated image without a positive
    ``height``/``width`` (each ground-truth mask is decoded at that size), or a crowd annotation whose
    ``segmentation`` does not decode at it (the loader checks only the non-crowd ones it turns into targets;
    a crowd RLE of another size or whose runs do not sum to h * w was scored as it was, exit 0)."""
    sizes = {image["id"]: _stated_hw(image) for image in gt.get("images", [])}
    for ann in gt.get("annotations", []):
        hw = sizes.get(ann["image_id"], (0, 0))
        if not all(hw):
            return f"image {ann['image_id']} has no positive 'height'/'width' (mask AP decodes its masks at that size)"
        if ann.get("iscrowd", 0) and (problem := segmentation_problem(ann.get("segmentation"), hw)):
            return f"image {ann['image_id']}, crowd annotation {ann['id']}: segmentation {problem}"
    return None


class SegmentationEvaluator:
    """Box AP (``bbox``), mask AP (``segm``) over the thing classes (``is_thing``) and, with ``panoptic`` (a
    ``PanopticEvaluator``), PQ over things and stuff.

    Refused (``ValueError`` naming ``where``, e.g. the annotation file): a ground truth COCOeval cannot score
    masks against (:func:`mask_ground_truth_problem`).

    ``process_batch(outputs, targets, canvas)`` post-processes a batch (:func:`segmentation_predictions`) and
    scores it; ``evaluate()`` -> ``{"bbox": CocoEvaluator.evaluate(), "segm": ..., "panoptic": PQ dict or
    None}``; ``summary()`` the three tables.
    """

    def __init__(self, box: Any, segm: Any, *, panoptic: Any = None, is_thing: Mapping[int, bool],
                 mask_threshold: float = MASK_THRESHOLD, panoptic_threshold: float = PANOPTIC_THRESHOLD,
                 where: object = "mask ground truth") -> None:
        if problem := mask_ground_truth_problem(segm.gt):
            raise ValueError(f"{where}: {problem}")
        self.box, self.segm, self.panoptic = box, segm, panoptic
        self.is_thing = dict(is_thing)
        self.mask_threshold, self.panoptic_threshold = mask_threshold, panoptic_threshold

    def process_batch(self, outputs: Mapping[str, Tensor], targets: list[dict[str, Tensor]],
                      canvas: tuple[int, int]) -> None:
        results = segmentation_predictions(outputs, targets, canvas, is_thing=self.is_thing,
                                           mask_threshold=self.mask_threshold,
                                           panoptic_threshold=self.panoptic_threshold,
                                           panoptic=self.panoptic is not None)
        by_id = {int(t["image_id"]): r for t, r in zip(targets, results, strict=True)}
        things = {image_id: thing_detections(result, self.is_thing) for image_id, result in by_id.items()}
        self.box.process(things)
        self.segm.process(things)
        if self.panoptic is not None:
            for image_id, result in by_id.items():
                self.panoptic.update(image_id, result["panoptic"]["segment_ids"], result["panoptic"]["segments_info"])

    def synchronize_between_processes(self) -> None:
        """Every rank's detections, masks and per-image PQ counts onto every rank (``all_gather_object``)."""
        import torch.distributed as dist

        self.box.synchronize_between_processes()
        self.segm.synchronize_between_processes()
        if self.panoptic is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.panoptic._counts)
        for part in gathered:
            self.panoptic._counts.update(part or {})

    def evaluate(self) -> dict[str, Any]:
        pq: Optional[dict[str, Any]] = None
        if self.panoptic is not None:
            pq = {k: v for k, v in self.panoptic.evaluate().items() if k != "per_class"}
        return {"bbox": self.box.evaluate(), "segm": self.segm.evaluate(), "panoptic": pq}

    def summary(self) -> str:
        parts = [f"bbox:\n{self.box.summary()}", f"segm:\n{self.segm.summary()}"]
        if self.panoptic is not None:
            parts.append(f"panoptic:\n{self.panoptic.summary()}")
        return "\n".join(parts)

    def results(self) -> list[dict[str, Any]]:
        return self.segm.results()
