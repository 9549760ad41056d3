"""Panoptic quality (PQ = SQ x RQ) by the COCO panoptic definition (Kirillov et al.; panopticapi's
``pq_compute``), per class and averaged over things, stuff and all classes.

Per image, for ground-truth segments g and predicted segments p given as id maps + ``segments_info``:

* A pair (g, p) of the same category matches when IoU > 0.5, with
  ``IoU = |g ∩ p| / (area(p) + area(g) - |g ∩ p| - |p ∩ void|)``; void is ground-truth id 0 (unlabelled).
  Crowd segments (``iscrowd`` 1) never match. Matches are unique (two segments cannot both exceed 0.5).
* Unmatched non-crowd ground truth: a false negative of its class.
* Unmatched prediction: a false positive of its class unless more than half of its area lies on void or on
  the crowd region of its own class (``(|p ∩ void| + |p ∩ crowd_c|) / area(p) > 0.5``).
* Per class: ``PQ = Σ IoU / (TP + FP/2 + FN/2)``, ``SQ = Σ IoU / TP`` (0 without TP),
  ``RQ = TP / (TP + FP/2 + FN/2)``; averages over the classes with ``TP + FP + FN > 0`` (classes absent
  from both sides are skipped); a group with no such class reports 0 with ``n`` 0.

Areas: a prediction's from its id map; a ground-truth segment's from its ``area`` in ``segments_info``
(panopticapi's rule; counted from the map when absent). A predicted id 0 listed in ``segments_info`` is a
segment (the reference post-processing numbers segments from 0); unlisted predicted 0 pixels are unlabelled.

Differences from torchmetrics' ``PanopticQuality`` (tested where they agree): it has no crowd; it merges every
stuff segment of one category into one; pixels of a category outside ``things``/``stuffs`` are void on both
sides, and void *predictions* also leave a target's union and can excuse a false negative (>50% void);
target areas come from the pixels. On inputs without crowd, with at most one stuff segment per category
and every predicted pixel in a listed segment, both give the same numbers (to 1e-6).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from detr_core.data.coco_panoptic import read_panoptic_png
from detr_core.input_files import read_regular_text

VOID = 0
_OFFSET = 256**3
GROUPS = {"All": None, "Things": True, "Stuff": False}
IdMap = Union[np.ndarray, torch.Tensor]
Segments = list[dict[str, Any]]


@dataclass
class ClassCounts:
    """One class's matches: true / false positives, false negatives and the IoU sum of the matches."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def add(self, other: ClassCounts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        self.iou += other.iou


def image_counts(gt_ids: IdMap, gt_segments: Segments, pred_ids: IdMap, pred_segments: Segments, *,
                 categories: Mapping[int, bool]) -> dict[int, ClassCounts]:
    """Per-class counts of one image. ``gt_ids`` and ``pred_ids``: [H, W] integer segment ids;
    ``gt_segments``: ``[{id, category_id, iscrowd?, area?}]``; ``pred_segments``: ``[{id, category_id}]``;
    ``categories``: category id -> isthing. ``ValueError`` for inconsistent input (module doc)."""
    gt, pred = _id_array(gt_ids, "gt segment_ids"), _id_array(pred_ids, "predicted segment_ids")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and predicted segment_ids differ in size: {list(gt.shape)} vs {list(pred.shape)}")
    gt_info = _gt_segments(gt, gt_segments, categories)
    pred_info = _pred_segments(pred, pred_segments, categories)
    pairs = _intersections(gt, pred)
    counts: dict[int, ClassCounts] = {}
    matched_gt, matched_pred = _match(pairs, gt_info, pred_info, counts)
    crowd = _count_false_negatives(gt_info, matched_gt, counts)
    _count_false_positives(pairs, pred_info, matched_pred, crowd, counts)
    return counts


def _id_array(ids: IdMap, name: str) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an [H, W] integer map, got {ids.dtype} {list(ids.shape)}")
    return ids.astype(np.int64)


def _gt_segments(gt: np.ndarray, segments: Segments, categories: Mapping[int, bool]) -> dict[int, dict]:
    info = {int(s["id"]): dict(s) for s in segments}
    for segment_id, segment in info.items():
        if int(segment["category_id"]) not in categories:
            raise ValueError(f"gt segment {segment_id} has unknown category_id {segment['category_id']}")
        if segment.get("area") is None:
            segment["area"] = int((gt == segment_id).sum())
    return info


def _pred_segments(pred: np.ndarray, segments: Segments, categories: Mapping[int, bool]) -> dict[int, dict]:
    """Predicted segments with their areas counted from the map (panopticapi's sanity checks)."""
    info = {int(s["id"]): dict(s) for s in segments}
    labels, counts = np.unique(pred, return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
        if label not in info:
            if label == VOID:
                continue
            raise ValueError(f"predicted segment id {label} is in the id map but not in segments_info")
        info[label]["area"] = count
    present = set(labels.tolist())
    missing = [segment_id for segment_id in info if segment_id not in present]
    if missing:
        raise ValueError(f"predicted segments {missing[:5]} are in segments_info but not in the id map")
    for segment_id, segment in info.items():
        if int(segment["category_id"]) not in categories:
            raise ValueError(f"predicted segment {segment_id} has unknown category_id {segment['category_id']}")
    return info


def _intersections(gt: np.ndarray, pred: np.ndarray) -> dict[tuple[int, int], int]:
    """``{(gt id, pred id): pixel count}`` of every overlapping pair."""
    joint = gt.astype(np.uint64) * _OFFSET + pred.astype(np.uint64)
    labels, counts = np.unique(joint, return_counts=True)
    return {(int(label // _OFFSET), int(label % _OFFSET)): int(n) for label, n in zip(labels, counts, strict=True)}


def _match(pairs: dict[tuple[int, int], int], gt_info: dict[int, dict], pred_info: dict[int, dict],
           counts: dict[int, ClassCounts]) -> tuple[set[int], set[int]]:
    """Count the IoU > 0.5 matches; returns the matched gt and pred ids."""
    matched_gt, matched_pred = set(), set()
    for (gt_id, pred_id), intersection in pairs.items():
        gt_seg, pred_seg = gt_info.get(gt_id), pred_info.get(pred_id)
        if gt_seg is None or pred_seg is None or gt_seg.get("iscrowd", 0) == 1:
            continue
        if int(gt_seg["category_id"]) != int(pred_seg["category_id"]):
            continue
        union = pred_seg["area"] + gt_seg["area"] - intersection - pairs.get((VOID, pred_id), 0)
        if intersection / union > 0.5:
            stat = counts.setdefault(int(gt_seg["category_id"]), ClassCounts())
            stat.tp, stat.iou = stat.tp + 1, stat.iou + intersection / union
            matched_gt.add(gt_id)
            matched_pred.add(pred_id)
    return matched_gt, matched_pred


def _count_false_negatives(gt_info: dict[int, dict], matched: set[int],
                           counts: dict[int, ClassCounts]) -> dict[int, int]:
    """Count unmatched non-crowd gt; returns ``{category: crowd segment id}`` (the last crowd one, as
    panopticapi: COCO has at most one crowd segment per category and image)."""
    crowd = {}
    for gt_id, segment in gt_info.items():
        if gt_id in matched:
            continue
        if segment.get("iscrowd", 0) == 1:
            crowd[int(segment["category_id"])] = gt_id
            continue
        counts.setdefault(int(segment["category_id"]), ClassCounts()).fn += 1
    return crowd


def _count_false_positives(pairs: dict[tuple[int, int], int], pred_info: dict[int, dict], matched: set[int],
                           crowd: dict[int, int], counts: dict[int, ClassCounts]) -> None:
    for pred_id, segment in pred_info.items():
        if pred_id in matched:
            continue
        category = int(segment["category_id"])
        ignored = pairs.get((VOID, pred_id), 0)
        if category in crowd:
            ignored += pairs.get((crowd[category], pred_id), 0)
        if ignored / segment["area"] > 0.5:
            continue
        counts.setdefault(category, ClassCounts()).fp += 1


def pq_from_counts(counts: Mapping[int, ClassCounts], categories: Mapping[int, bool]) -> dict[str, Any]:
    """``{"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category: {"pq", "sq", "rq",
    "tp", "fp", "fn"}}}`` from summed counts (fractions in [0, 1]; module doc for the definition)."""
    per_class = {c: _class_quality(counts.get(c, ClassCounts())) for c in sorted(categories)}
    result: dict[str, Any] = {}
    for group, isthing in GROUPS.items():
        rows = [q for c, q in per_class.items() if (isthing is None or categories[c] == isthing)
                and q["tp"] + q["fp"] + q["fn"] > 0]  # fmt: skip
        n = len(rows)
        result[group] = {k: (sum(q[k] for q in rows) / n if n else 0.0) for k in ("pq", "sq", "rq")}
        result[group]["n"] = n
    result["per_class"] = per_class
    return result


def _class_quality(stat: ClassCounts) -> dict[str, float]:
    denominator = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
    return {"pq": stat.iou / denominator if denominator else 0.0, "sq": stat.iou / stat.tp if stat.tp else 0.0,
            "rq": stat.tp / denominator if denominator else 0.0, "tp": stat.tp, "fp": stat.fp, "fn": stat.fn}  # fmt: skip


def panoptic_quality(pairs: Iterable[tuple[tuple[IdMap, Segments], tuple[IdMap, Segments]]], *,
                     categories: Mapping[int, bool]) -> dict[str, Any]:
    """PQ / SQ / RQ (see :func:`pq_from_counts`) of in-memory ``((gt_ids, gt_segments), (pred_ids,
    pred_segments))`` image pairs."""
    total: dict[int, ClassCounts] = {}
    for (gt_ids, gt_segments), (pred_ids, pred_segments) in pairs:
        _add_counts(total, image_counts(gt_ids, gt_segments, pred_ids, pred_segments, categories=categories))
    return pq_from_counts(total, categories)


def _add_counts(total: dict[int, ClassCounts], counts: Mapping[int, ClassCounts]) -> None:
    for category, stat in counts.items():
        total.setdefault(category, ClassCounts()).add(stat)


def format_summary(result: Mapping[str, Any]) -> str:
    """A panopticapi-style table: PQ, SQ, RQ (in %) and the class count N for All, Things and Stuff."""
    lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s}  {'N':>5s}", "-" * 38]
    for group in GROUPS:
        row = result[group]
        lines.append(f"{group:10s}| {100 * row['pq']:5.1f}  {100 * row['sq']:5.1f}  {100 * row['rq']:5.1f}  "
                     f"{row['n']:5d}")  # fmt: skip
    return "\n".join(lines)


class PanopticEvaluator:
    """PQ against a COCO panoptic ground truth: ``gt_json`` (``images``, ``annotations`` =
    ``[{image_id, file_name, segments_info}]``, ``categories`` with ``isthing``) and ``gt_folder`` (the
    PNGs named by ``file_name``).

    ``update(image_id, segment_ids [H, W] int, segments_info)`` scores one image at once (its PNG read then;
    an image updated again is replaced); ``synchronize_between_processes()`` gathers ranks under torchrun;
    ``evaluate()`` / ``stats`` give :func:`pq_from_counts`' dict plus flat ``PQ``, ``SQ``, ``RQ``,
    ``PQ_th`` ... ``RQ_st`` over the updated images; ``summary()`` the table.
    """

    def __init__(self, gt_json: Union[str, os.PathLike, Mapping[str, Any]], gt_folder: Union[str, os.PathLike]):
        dataset = _load_json(gt_json)
        self.categories = {int(c["id"]): bool(c.get("isthing", 1)) for c in dataset.get("categories", [])}
        self.gt_folder = Path(gt_folder)
        self._gt = {int(a["image_id"]): a for a in dataset.get("annotations", [])}
        self._counts: dict[int, dict[int, ClassCounts]] = {}

    def update(self, image_id: int, segment_ids: IdMap, segments_info: Segments) -> None:
        """Score one image's prediction against its ground truth."""
        annotation = self._gt.get(int(image_id))
        if annotation is None:
            raise ValueError(f"image id {image_id} has no annotation in the panoptic ground truth")
        gt_ids = read_panoptic_png(self.gt_folder / annotation["file_name"])  # checked: format, mode, depth
        try:
            counts = image_counts(gt_ids, annotation["segments_info"], segment_ids, segments_info,
                                  categories=self.categories)  # fmt: skip
        except ValueError as error:
            raise ValueError(f"image {image_id} ({annotation['file_name']}): {error}") from None
        self._counts[int(image_id)] = counts

    def synchronize_between_processes(self) -> None:
        """Gather every rank's per-image counts onto every rank (``all_gather_object``); no-op without an
        initialised process group of two or more. An image scored on several ranks counts once."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        gathered: list[dict[int, dict[int, ClassCounts]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._counts)
        self._counts = {image_id: counts for part in gathered for image_id, counts in (part or {}).items()}

    def evaluate(self) -> dict[str, Any]:
        """The PQ dict over the updated images (see the class doc)."""
        total: dict[int, ClassCounts] = {}
        for counts in self._counts.values():
            _add_counts(total, counts)
        result = pq_from_counts(total, self.categories)
        for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            result.update({f"{k.upper()}{suffix}": result[group][k] for k in ("pq", "sq", "rq")})
        return result

    @property
    def stats(self) -> dict[str, Any]:
        return self.evaluate()

    def summary(self) -> str:
        return format_summary(self.evaluate())


def _load_json(source: Union[str, os.PathLike, Mapping[str, Any]]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    dataset = json.loads(read_regular_text(source))
    if not isinstance(dataset, dict) or "annotations" not in dataset or "categories" not in dataset:
        raise ValueError(f"{source}: a COCO panoptic json needs 'annotations' and 'categories'")
    return dataset
