"""The COCO ground truth of an evaluation set, and the evaluator built on it."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detr_core.data.coco_panoptic import CocoPanoptic, read_panoptic_png
from detr_core.data.sources import DatasetSource, voc_split_name
from detr_core.data.voc import voc_to_coco
from detr_core.data.yolo import yolo_to_coco


def panoptic_to_coco(dataset: Any) -> dict[str, Any]:
    """A COCO instances dataset dict from a :class:`~detr_core.data.coco_panoptic.CocoPanoptic`'s files: one
    annotation per *thing* segment (crowd kept as ``iscrowd``), ``segmentation`` the segment's pixels as
    compressed RLE, ``bbox`` and ``area`` from them, and the thing categories. Box AP and mask AP of a panoptic
    model are COCO's instance metrics, over things; stuff is scored by PQ (the reference's converted ground
    truth also boxed the stuff regions)."""
    things = {c for c, thing in dataset.is_thing.items() if thing}
    annotations: list[dict[str, Any]] = []
    for image_id in dataset.ids:
        png = dataset.png_path(image_id)
        if png is None:
            continue
        ids = read_panoptic_png(png)
        for segment in dataset.anns[image_id]["segments_info"]:
            if int(segment["category_id"]) in things:
                annotations.append(_segment_annotation(ids == int(segment["id"]), segment, image_id,
                                                       len(annotations) + 1))
    data = dataset.data
    return {"images": data["images"], "annotations": annotations,
            "categories": [{k: v for k, v in c.items() if k != "isthing"} for c in data["categories"]
                           if int(c["id"]) in things]}


def _segment_annotation(pixels: np.ndarray, segment: dict[str, Any], image_id: int, ann_id: int) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(pixels.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": int(segment["category_id"]),
            "iscrowd": int(segment.get("iscrowd", 0)), "segmentation": rle,
            "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


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
    if isinstance(dataset, CocoPanoptic):
        data = panoptic_to_coco(dataset)
    elif source.voc_root is not None:
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


def make_evaluator(coco_gt: COCO, backend: str, *, masks: bool = False, dataset: Any = None,
                   is_thing: dict[int, bool] | None = None, panoptic_threshold: float | None = None) -> Any:
    """The evaluator of a detector (box AP), or with ``masks`` of a panoptic model: box AP, mask AP and, when
    ``dataset`` is COCO panoptic, PQ against its PNGs (:class:`~detr_core.evaluation.segmentation.
    SegmentationEvaluator`; ``is_thing``: the model's things/stuff map)."""
    from detr_core.evaluation.coco import CocoEvaluator

    if not masks:
        return CocoEvaluator(coco_gt, backend=backend)
    from detr_core.evaluation.panoptic import PanopticEvaluator
    from detr_core.evaluation.segmentation import PANOPTIC_THRESHOLD, SegmentationEvaluator

    panoptic = None
    if isinstance(dataset, CocoPanoptic):
        panoptic = PanopticEvaluator(dataset.data, dataset.panoptic_dir)
    return SegmentationEvaluator(CocoEvaluator(coco_gt, backend=backend),
                                 CocoEvaluator(coco_gt, backend=backend, iou_type="segm"), panoptic=panoptic,
                                 is_thing=is_thing or {}, panoptic_threshold=panoptic_threshold or PANOPTIC_THRESHOLD,
                                 where=dataset_where(dataset))
