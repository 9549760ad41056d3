"""The COCO ground truth of an evaluation set, and the evaluator built on it."""

from __future__ import annotations

import contextlib
import io
from typing import Any

from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detr_core.data.sources import DatasetSource, voc_split_name
from detr_core.data.voc import voc_to_coco
from detr_core.data.yolo import yolo_to_coco


def coco_ground_truth(dataset: Dataset, source: DatasetSource) -> COCO:
    """The ground truth to score ``dataset`` against (eval, train's periodic evaluation, bench), refused by
    :func:`require_annotations` when it holds nothing to score."""
    gt = _ground_truth(dataset, source)
    require_annotations(gt, dataset_where(dataset))
    return gt


def dataset_where(dataset: Any) -> object:
    """What names an evaluation set in an error: its annotation file, VOC folder or images folder."""
    return next((getattr(dataset, a) for a in ("ann_file", "voc_dir", "images_dir")
                 if getattr(dataset, a, None) is not None), "the val split")


def _ground_truth(dataset: Dataset, source: DatasetSource) -> COCO:
    """``dataset.coco`` for COCO-format sets; VOC and YOLO splits are converted (same ids and boxes as the
    dataset)."""
    coco = getattr(dataset, "coco", None)
    if coco is not None:
        return coco
    data = None
    if source.voc_root is not None:
        data = voc_to_coco(source.voc_root, voc_split_name(source, "val"), year=source.voc_year,
                           remove_difficult=source.remove_difficult, allow_outside_images=source.allow_outside_images)
    elif source.yolo_root is not None:
        data = yolo_to_coco(source.yolo_root, getattr(dataset, "split", "val"))
    if data is not None:
        gt = COCO()
        gt.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt
    raise ValueError(f"{type(dataset).__name__}: no COCO ground truth to evaluate against")


def require_annotations(coco_gt: COCO, where: object) -> None:
    """``ValueError`` ("no annotations to score in WHERE") when the ground truth holds no non-crowd
    annotation: COCOeval would print -1.000 for every AP and AR instead of a score."""
    anns = coco_gt.dataset.get("annotations") or []
    if any(not a.get("iscrowd", 0) for a in anns):
        return
    crowd = f" (its {len(anns)} crowd annotation(s) are ignored in scoring)" if anns else ""
    raise ValueError(f"no annotations to score in {where}{crowd}: every AP would be -1")


def make_evaluator(coco_gt: COCO, backend: str) -> Any:
    from detr_core.evaluation.coco import CocoEvaluator

    return CocoEvaluator(coco_gt, backend=backend)
