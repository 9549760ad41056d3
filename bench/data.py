"""The benchmark's images: the val set (with its COCO ground truth) and calibration batches for int8.

Images are read as uint8 at their original size (``dataset[i]`` without transforms) so that every row
prepares them itself with the same ``exporters.prepare.prepare``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import Tensor

from bench.accuracy import EvalSet
from detr_core.data.sources import DatasetSource, build_dataset

logger = logging.getLogger(__name__)


def _uint8(image: Tensor) -> Tensor:
    """A dataset image in [0, 1] float (or already uint8) as uint8 [3, H, W]."""
    if image.dtype == torch.uint8:
        return image
    return (image * 255.0).round().clamp(0, 255).to(torch.uint8)


def read_images(dataset, limit: int | None = None) -> tuple[list[Tensor], list[int]]:
    """The first ``limit`` images of ``dataset`` (all for None) and their image ids."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    images, ids = [], []
    for index in range(count):
        image, target = dataset[index]
        images.append(_uint8(image))
        ids.append(int(target["image_id"]))
    return images, ids


def load_eval_set(source: DatasetSource, *, canvas: tuple[int, int], batch_size: int = 1,
                  max_images: int | None = None, size: int | None = None,
                  max_size: int | None = None, masks: bool = False) -> EvalSet:
    """The val split of ``source`` (shapes default when empty) as an :class:`EvalSet`.

    ``masks`` (a segmentation model): the shapes default is its panoptic variant; the COCO instances
    ground truth (with ``segmentation``) scores box and mask AP, and a COCO panoptic ground truth in the
    reference layout under ``coco_panoptic_path`` (else ``coco_path``) scores PQ."""
    from detr_core.evaluation.ground_truth import coco_ground_truth

    if masks:
        source = segmentation_source(source)
    built = build_dataset(source, "val", transforms=None, progress=False)
    images, ids = read_images(built.dataset, max_images)
    if not images:
        raise ValueError("the val set has no images")
    coco_gt = coco_ground_truth(built.dataset, source)
    logger.info("val set: %d images, canvas %dx%d, batch %d", len(images), canvas[0], canvas[1], batch_size)
    evalset = EvalSet(images, ids, coco_gt, canvas, batch_size, size, max_size)
    if masks:
        from bench.segm import load_panoptic_truth

        evalset.panoptic = load_panoptic_truth(getattr(source, "coco_panoptic_path", None) or source.coco_path)
    return evalset


def segmentation_source(source: DatasetSource) -> DatasetSource:
    """``source``, or for the shapes default its panoptic variant (instance masks + panoptic PNGs)."""
    if not source.is_default:
        return source
    from detr_core.data.shapes import ensure_default_shapes

    return DatasetSource(coco_path=str(ensure_default_shapes(progress=True, panoptic=True)))


def calibration_batches(source: DatasetSource, template: EvalSet, count: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``count`` training images prepared like ``template``'s batches: (images, mask) per batch."""
    built = build_dataset(source, "train", transforms=None, progress=False)
    images, _ = read_images(built.dataset, count)
    for start in range(0, len(images), template.batch_size):
        batch, mask, _ = template.prepare(images[start:start + template.batch_size])
        yield batch, mask
