"""COCO evaluation speed: pycocotools vs faster-coco-eval on 500 synthetic images x 100 detections.

``CocoEvaluator.evaluate()`` is timed end to end (gt index, loadRes, evaluate, accumulate, summarize) on
already-processed detections. With ``--benchmark-disable`` each backend runs once on 20 images.
"""

from __future__ import annotations

import numpy as np
import pytest

from detr_core.evaluation.coco import CocoEvaluator

N_IMAGES, N_IMAGES_DISABLED = 500, 20
QUERIES = 100
N_CATEGORIES = 10
_MIN_SECONDS: dict[str, float] = {}


def synthetic_set(n_images: int, seed: int = 0) -> tuple[dict, dict]:
    """A gt with 1-10 boxes per image over 10 categories, and 100 detections per image (jittered gt
    boxes first, then random boxes), as DETR's 100 queries would give."""
    rng = np.random.default_rng(seed)
    images, annotations, predictions = [], [], {}
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480})
        n = int(rng.integers(1, 11))
        wh = rng.uniform(8, 300, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * ([640, 480] - wh)
        labels = rng.integers(0, N_CATEGORIES, n)
        for (x, y), (w, h), label in zip(xy, wh, labels, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0, "category_id": int(label)})  # fmt: skip
        boxes = np.concatenate([xy, xy + wh], axis=1) + rng.normal(0, 4, (n, 4))
        extra_xy = rng.uniform(0, 400, (QUERIES - n, 2))
        extra = np.concatenate([extra_xy, extra_xy + rng.uniform(4, 240, (QUERIES - n, 2))], axis=1)
        predictions[image_id] = {
            "scores": rng.random(QUERIES).astype(np.float32),
            "labels": np.concatenate([labels, rng.integers(0, N_CATEGORIES, QUERIES - n)]),
            "boxes": np.concatenate([boxes, extra]).astype(np.float32),
        }
    categories = [{"id": c, "name": str(c)} for c in range(N_CATEGORIES)]
    return {"images": images, "annotations": annotations, "categories": categories}, predictions


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_bench_coco_evaluation(benchmark, backend):
    n_images = N_IMAGES_DISABLED if benchmark.disabled else N_IMAGES
    gt, predictions = synthetic_set(n_images)
    evaluator = CocoEvaluator(gt, backend=backend)
    evaluator.process(predictions)
    benchmark.group = f"coco-eval {n_images} images x {QUERIES} detections"
    metrics = benchmark.pedantic(evaluator.evaluate, rounds=3, iterations=1, warmup_rounds=1)
    other = CocoEvaluator(gt, backend="faster" if backend == "pycocotools" else "pycocotools")
    other.process(predictions)
    expected = other.evaluate()  # the two backends score the same detections alike (also under make test)
    assert 0.01 < metrics["AP"] < 0.99 and metrics["stats"] == pytest.approx(expected["stats"], abs=1e-4)
    if benchmark.disabled:
        return
    seconds = benchmark.stats.stats.min
    _MIN_SECONDS[backend] = seconds
    benchmark.extra_info["images_per_s"] = round(n_images / seconds, 1)
    benchmark.extra_info["AP"] = round(metrics["AP"], 4)
    if backend == "faster" and "pycocotools" in _MIN_SECONDS:
        benchmark.extra_info["speedup_vs_pycocotools"] = round(_MIN_SECONDS["pycocotools"] / seconds, 2)
