"""COCO box and mask evaluation of DETR detections with pycocotools (the reference) or faster-coco-eval.

Data contracts
--------------
* Ground truth: a COCO annotation json (path) or a loaded COCO object (pycocotools or faster-coco-eval;
  only its ``.dataset`` dict is used, so either backend can evaluate it).
* ``process`` input: ``{image_id: {"scores": [Q], "labels": [Q], "boxes": [Q, 4]}}`` with boxes as
  absolute ``x0, y0, x1, y1`` pixels of the *original* image (what ``PostProcess`` returns), torch
  tensors or numpy arrays, plus ``"masks": [Q, 1, H, W]`` (0/1, the image's original size, what
  ``PostProcessSegm`` returns) for ``iou_type="segm"``. An image may have ``Q == 0`` detections.
  Processing an image id again replaces its detections (DistributedSampler pads with repeated images;
  they are counted once).
* ``results()``: COCO results, one dict per query: ``image_id``, ``category_id``, ``bbox`` (x, y, w, h),
  ``score`` -- every query of every image, as the reference evaluates them (no score threshold); for
  ``segm`` a compressed RLE ``segmentation`` (pycocotools.mask.encode, counts as text) instead of ``bbox``.
* ``evaluate()``: the 12 standard COCO numbers under ``STAT_NAMES`` plus ``stats`` (list of 12 floats).
  -1 means "no ground truth in that bucket", as in pycocotools.

The ground truth must pass the dataset loader's whole-file rules (``detr_core.data.integrity``: no
duplicate image / annotation / category ids, no annotation pointing at a missing image or category, every
bbox four numbers); a ``ValueError`` names the first problem otherwise.

Evaluated images are the processed ones (the reference sets ``params.imgIds`` the same way), or every
ground-truth image when nothing was processed. Image ids absent from the ground truth are an error.
Category ids absent from the ground truth are kept in ``results()`` (the reference writes them too) but
COCOeval scores only ground-truth categories, so they are dropped from the numbers; a warning says how many.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from detr_core.atomic import atomic_write
from detr_core.data.integrity import duplicate_id_problems, reference_problems, shape_problems
from detr_core.input_files import read_regular_text

log = logging.getLogger(__name__)

BACKENDS = ("faster", "pycocotools")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_SUMMARY_ROWS = (  # (AP or AR, IoU label, area, maxDets) for the 12 standard lines, in STAT_NAMES order
    (1, "0.50:0.95", "all", 100), (1, "0.50", "all", 100), (1, "0.75", "all", 100),
    (1, "0.50:0.95", "small", 100), (1, "0.50:0.95", "medium", 100), (1, "0.50:0.95", "large", 100),
    (0, "0.50:0.95", "all", 1), (0, "0.50:0.95", "all", 10), (0, "0.50:0.95", "all", 100),
    (0, "0.50:0.95", "small", 100), (0, "0.50:0.95", "medium", 100), (0, "0.50:0.95", "large", 100),
)  # fmt: skip


class DetectionArrays:
    """One image's detections as the evaluator keeps them, numpy arrays: ``scores [Q]``, ``labels [Q]`` (int64),
    ``boxes [Q, 4]`` xyxy, and the masks' COCO RLEs."""

    __slots__ = ("scores", "labels", "boxes", "rles")

    def __init__(self, scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, rles: list | None = None):
        self.scores, self.labels, self.boxes, self.rles = scores, labels, boxes, rles

    @classmethod
    def from_prediction(cls, prediction: Mapping[str, Any]) -> DetectionArrays:
        """Convert a ``{"scores", "labels", "boxes"}`` dict of tensors / arrays, checking the shapes."""
        scores = _to_numpy(prediction["scores"]).reshape(-1)
        labels = _to_numpy(prediction["labels"]).reshape(-1).astype(np.int64)
        boxes = _to_numpy(prediction["boxes"]).reshape(-1, 4)
        if not (len(scores) == len(labels) == len(boxes)):
            raise ValueError(
                f"scores/labels/boxes lengths differ: {len(scores)}, {len(labels)}, {len(boxes)}"
            )
        rles = _encode_masks(prediction["masks"], len(scores)) if "masks" in prediction else None
        return cls(scores, labels, boxes, rles)

    def __getstate__(self):
        return (self.scores, self.labels, self.boxes, self.rles)

    def __setstate__(self, state):
        self.scores, self.labels, self.boxes, self.rles = (*state, None)[:4]

    def to_results(self, image_id: int, iou_type: str = "bbox") -> list[dict[str, Any]]:
        """COCO result dicts (bbox x, y, w, h computed in the boxes' dtype, like the reference; for
        ``segm`` the RLE ``segmentation`` and no bbox: pycocotools' loadRes would take a bbox first)."""
        if iou_type == "segm":
            return [{"image_id": image_id, "category_id": label, "segmentation": rle, "score": score}
                    for label, rle, score in zip(self.labels.tolist(), self.rles, self.scores.tolist(), strict=True)]
        x0, y0, x1, y1 = (self.boxes[:, i] for i in range(4))
        xywh = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).tolist()
        return [
            {"image_id": image_id, "category_id": label, "bbox": box, "score": score}
            for label, box, score in zip(self.labels.tolist(), xywh, self.scores.tolist(), strict=True)
        ]


def _encode_masks(masks: Any, count: int) -> list[dict[str, Any]]:
    """[Q, 1, H, W] or [Q, H, W] 0/1 masks -> Q compressed RLEs (``counts`` decoded to text for JSON)."""
    from pycocotools import mask as mask_utils

    array = _to_numpy(masks)
    array = array[:, 0] if array.ndim == 4 and array.shape[1] == 1 else array
    if array.ndim != 3 or len(array) != count:
        raise ValueError(f"masks must be [Q, 1, H, W] with Q = {count} detections, got {list(array.shape)}")
    rles = mask_utils.encode(np.asfortranarray(array.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device, any grad state) or array-like as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def load_gt_dataset(coco_gt: Any) -> dict[str, Any]:
    """The COCO ground-truth dict of a path to an annotation json or of a loaded COCO object."""
    if isinstance(coco_gt, (str, os.PathLike)):
        dataset = json.loads(read_regular_text(coco_gt))
    elif hasattr(coco_gt, "dataset"):
        dataset = coco_gt.dataset
    elif isinstance(coco_gt, dict):
        dataset = coco_gt
    else:
        raise TypeError(
            f"coco_gt must be a COCO object, an annotation dict or a json path, not {type(coco_gt)}"
        )
    for key in ("images", "categories"):
        if key not in dataset:
            raise ValueError(f"ground truth has no {key!r} list")
    dataset.setdefault("annotations", [])
    _refuse_inconsistent(dataset, str(coco_gt) if isinstance(coco_gt, (str, os.PathLike)) else "ground truth")
    return dataset


def _refuse_inconsistent(dataset: dict[str, Any], name: str) -> None:
    """The loader's whole-file rules (:mod:`detr_core.data.integrity`): duplicate ids, annotations pointing
    at missing images or categories and malformed entries would be scored silently wrong."""
    problems = shape_problems(dataset, need_file_name=False)
    problems = problems or duplicate_id_problems(dataset) + reference_problems(dataset)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{name}: {problems[0]}{more}")


def format_summary(stats: list[float]) -> str:
    """The standard 12-line COCO summary of ``stats``, byte-identical to what pycocotools prints."""
    line = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"
    rows = []
    for (is_ap, iou, area, max_dets), value in zip(_SUMMARY_ROWS, stats, strict=True):
        title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
        rows.append(line.format(title, kind, iou, area, max_dets, value))
    return "\n".join(rows)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as JSON through a temp file in the same folder, fsync and rename."""
    return atomic_write(path, lambda handle: json.dump(payload, handle), binary=False)


def _pycocotools_stats(gt: dict[str, Any], results: list[dict], img_ids: list[int],
                       iou_type: str = "bbox") -> list[float]:
    """The 12 stats of pycocotools' COCOeval (its stdout is captured and logged at debug level)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else _empty_results_pycocotools(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("pycocotools output:\n%s", captured.getvalue())
    return [float(v) for v in evaluator.stats]


def _empty_results_pycocotools(coco_gt: Any) -> Any:
    """A results COCO with no detections (pycocotools' loadRes cannot take an empty list)."""
    from pycocotools.coco import COCO

    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                       "categories": list(coco_gt.dataset["categories"])}  # fmt: skip
    coco_dt.createIndex()
    return coco_dt


def _faster_stats(gt: dict[str, Any], results: list[dict], img_ids: list[int],
                  iou_type: str = "bbox") -> list[float]:
    """The 12 stats of faster-coco-eval's C++ COCOeval, configured to match pycocotools exactly:
    ``lvis_style=False`` (standard AP, not LVIS), ``separate_eval=False`` (same numbers, one C++ pass),
    ``extra_calc=False``; its ``stats`` is the first 12 of ``all_stats`` (which adds AR50/AR75)."""
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = log.debug
    coco_gt = COCO(gt, print_function=quiet)
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=quiet,
                                lvis_style=False, separate_eval=False, extra_calc=False)  # fmt: skip
    evaluator.params.imgIds = img_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return [float(v) for v in evaluator.stats[: len(STAT_NAMES)]]


_STATS_FUNCTIONS = {"pycocotools": _pycocotools_stats, "faster": _faster_stats}


class CocoEvaluator:
    """Accumulate per-image detections, gather them across ranks and compute the 12 COCO box numbers.

    ``backend="faster"`` (faster-coco-eval, C++) or ``"pycocotools"`` (the reference); both give the same
    12 numbers (to 1e-4, tested). ``iou_type="bbox"`` scores boxes; ``"segm"`` scores the ``masks`` of
    ``PostProcessSegm`` (mask AP; the ground truth's polygons or RLEs, each image's mask at its size).
    """

    def __init__(self, coco_gt: Any, *, backend: str = "faster", iou_type: str = "bbox"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown evaluator backend {backend!r}; choose from {BACKENDS}")
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type {iou_type!r} is not supported ('bbox' or 'segm')")
        self.backend, self.iou_type = backend, iou_type
        self.gt = load_gt_dataset(coco_gt)
        self._gt_image_ids = {int(image["id"]) for image in self.gt["images"]}
        self._gt_category_ids = {int(category["id"]) for category in self.gt["categories"]}
        self._gt_sizes = {int(i["id"]): [int(i.get("height", -1)), int(i.get("width", -1))]
                          for i in self.gt["images"]}  # fmt: skip
        self._detections: dict[int, DetectionArrays] = {}
        self._metrics: dict[str, Any] | None = None

    def reset(self) -> None:
        """Forget every processed image (and the last metrics)."""
        self._detections = {}
        self._metrics = None

    def process(self, predictions: Mapping[Any, Mapping[str, Any]]) -> None:
        """Add ``{image_id: {"scores": [Q], "labels": [Q], "boxes": [Q, 4] xyxy pixels}}``.

        Raises ``ValueError`` for an image id that is not in the ground truth."""
        for image_id, prediction in predictions.items():
            image_id = int(image_id)
            if image_id not in self._gt_image_ids:
                raise ValueError(f"image id {image_id} is not in the ground truth images")
            detections = DetectionArrays.from_prediction(prediction)
            if self.iou_type == "segm":
                self._check_masks(image_id, detections)
            self._detections[image_id] = detections
        self._metrics = None

    def _check_masks(self, image_id: int, detections: DetectionArrays) -> None:
        """Mask AP needs every image's masks at its ground-truth size (h, w)."""
        size = self._gt_sizes[image_id]
        if detections.rles is None:
            raise ValueError(f"image {image_id}: iou_type 'segm' needs 'masks' [Q, 1, H, W] in predictions")
        if any(rle["size"] != size for rle in detections.rles):
            got = detections.rles[0]["size"]
            raise ValueError(f"image {image_id}: masks are {got} (h, w), the ground-truth image is {size}")

    @property
    def image_ids(self) -> list[int]:
        """Sorted ids of the processed images."""
        return sorted(self._detections)

    def synchronize_between_processes(self) -> None:
        """Gather every rank's detections onto every rank (``all_gather_object``); no-op when
        ``torch.distributed`` is not initialised or has one process. Repeated image ids are merged."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        gathered: list[dict[int, DetectionArrays] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._detections)
        merged: dict[int, DetectionArrays] = {}
        for part in gathered:
            merged.update(part or {})
        self._detections = merged
        self._metrics = None

    def results(self) -> list[dict[str, Any]]:
        """COCO result dicts of every query of every processed image, by image id (fresh list each call)."""
        results: list[dict[str, Any]] = []
        for image_id in self.image_ids:
            results.extend(self._detections[image_id].to_results(image_id, self.iou_type))
        return results

    def write_detections(self, path: str | Path) -> Path:
        """Write ``results()`` as a COCO results JSON, atomically; returns the path."""
        return write_json_atomic(path, self.results())

    def evaluate(self) -> dict[str, Any]:
        """Run the backend and return ``{name: value for name in STAT_NAMES}`` plus ``stats`` (12 floats)."""
        results = self.results()
        self._warn_unknown_categories(results)
        img_ids = self.image_ids or sorted(self._gt_image_ids)
        if not self._detections:
            log.warning("no image was processed: evaluating empty detections on all %d images", len(img_ids))
        stats = _STATS_FUNCTIONS[self.backend](self.gt, results, img_ids, self.iou_type)
        self._metrics = {**dict(zip(STAT_NAMES, stats, strict=True)), "stats": stats}
        return dict(self._metrics)

    def summary(self) -> str:
        """The standard 12-line COCO summary (evaluates first if needed); returned, not printed."""
        metrics = self._metrics if self._metrics is not None else self.evaluate()
        return format_summary(metrics["stats"])

    def _warn_unknown_categories(self, results: list[dict[str, Any]]) -> None:
        unknown = [r["category_id"] for r in results if r["category_id"] not in self._gt_category_ids]
        if unknown:
            log.warning("%d detections have category ids absent from the ground truth %s; "
                        "COCOeval does not score them", len(unknown), sorted(set(unknown))[:10])  # fmt: skip
