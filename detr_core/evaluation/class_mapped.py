"""Scoring through a class map: model class ids become dataset category ids before COCO evaluation.

:class:`ClassMappedEvaluator` wraps a :class:`~detr_core.evaluation.coco.CocoEvaluator`: each image's
detections (``scores``/``labels``/``boxes``, model ids) are remapped with a
:class:`~detr_core.data.class_map.ResolvedClassMap`; detections of unmapped classes are dropped from the
scoring and counted (:meth:`dropped_line`). :func:`map_targets` does the inverse for the loss: dataset
labels become model ids, objects of unmapped categories leave the loss targets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from detr_core.data.class_map import ResolvedClassMap, load_class_map
from detr_core.data.coco import PER_OBJECT_KEYS

_PER_OBJECT = (*PER_OBJECT_KEYS, "boxes")


class ClassMappedEvaluator:
    """A CocoEvaluator fed remapped detections; everything else is delegated to it."""

    def __init__(self, evaluator: Any, class_map: ResolvedClassMap):
        self.evaluator, self.class_map = evaluator, class_map
        self.kept = self.dropped = 0

    def process(self, predictions: Mapping[Any, Mapping[str, Any]]) -> None:
        """``{image_id: {"scores" [Q], "labels" [Q] model ids, "boxes" [Q, 4]}}``, remapped then processed."""
        self.evaluator.process({image_id: self._remap(p) for image_id, p in predictions.items()})

    def _remap(self, prediction: Mapping[str, Any]) -> dict[str, Tensor]:
        labels = torch.as_tensor(prediction["labels"])
        keep, mapped = self.class_map.remap_labels(labels)
        self.kept += int(keep.sum())
        self.dropped += int((~keep).sum())
        return {"scores": torch.as_tensor(prediction["scores"])[keep], "labels": mapped[keep],
                "boxes": torch.as_tensor(prediction["boxes"])[keep]}

    def dropped_line(self) -> str:
        """``class map NAME: K of N detections ... dropped`` for the log."""
        total = self.kept + self.dropped
        return (f"class map {self.class_map.name}: {self.dropped} of {total} detections were of model classes "
                f"outside the map, dropped from the scoring; {self.kept} scored with the dataset's ids")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.evaluator, name)


def map_targets(targets: list[dict[str, Any]], inverse: Mapping[int, int]) -> list[dict[str, Any]]:
    """Targets with ``labels`` (dataset ids) turned into model class ids; objects whose category has no
    model class are left out (every per-object field filtered alike)."""
    out = []
    for target in targets:
        labels = target["labels"]
        model_ids = torch.tensor([inverse.get(int(v), -1) for v in labels.tolist()], dtype=labels.dtype)
        keep = model_ids >= 0
        mapped = {k: v[keep] if k in _PER_OBJECT else v for k, v in target.items()}
        mapped["labels"] = model_ids[keep]
        out.append(mapped)
    return out


def remap_found(item: Any, class_map: ResolvedClassMap) -> tuple[Any, int]:
    """One image's predicted detections (a dataclass with ``scores``, ``labels``, ``boxes``, ``queries`` [N]
    and ``attention`` [k <= N, H, W] or None, best first) with unmapped classes dropped and labels in dataset
    ids; returns (the new item, how many were dropped)."""
    keep, mapped = class_map.remap_labels(item.labels)
    attention = item.attention
    if attention is not None:
        attention = attention[keep[: attention.shape[0]]]
    new = dataclasses.replace(item, scores=item.scores[keep], labels=mapped[keep], boxes=item.boxes[keep],
                              queries=item.queries[keep], attention=attention)
    return new, int((~keep).sum())


def names_by_id(class_map: ResolvedClassMap) -> tuple[str, ...]:
    """The dataset's names indexed by category id (ids the map does not reach: their number)."""
    size = max(class_map.data_names, default=-1) + 1
    return tuple(class_map.data_names.get(i, str(i)) for i in range(size))


def class_map_for(spec: str | None, model: Any, coco_gt: Any) -> ResolvedClassMap | None:
    """``spec`` resolved against a ``DETR``'s classes and a COCO ground truth's categories (None: no map)."""
    if spec is None:
        return None
    dataset = coco_gt.dataset if hasattr(coco_gt, "dataset") else coco_gt
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in dataset["categories"]}
    return load_class_map(spec, model_names=tuple(model.config.class_names or ()), num_model_classes=model.num_classes,
                          data_names=names)
