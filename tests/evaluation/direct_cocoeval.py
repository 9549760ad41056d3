"""pycocotools run directly (no detrtool code): the yardstick the evaluation tests compare against."""

from __future__ import annotations

import contextlib
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def cocoeval_stats(gt: dict, results: list[dict], iou_type: str = "bbox") -> list[float]:
    """The 12 ``COCOeval(iouType=iou_type)`` numbers of ``results`` (COCO results dicts) against ``gt``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]
