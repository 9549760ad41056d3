"""CocoEvaluator against pycocotools' own evaluation, and the two backends against each other."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import numpy as np
import pytest
import torch

from detr_core.evaluation.coco import STAT_NAMES, CocoEvaluator, format_summary

CATEGORY_IDS = (0, 1, 3, 7)  # starts at 0, with gaps


def make_gt(rng: np.random.Generator, n_images: int = 30) -> dict:
    """A COCO gt: several categories (ids from 0), crowd boxes, all three area buckets, and images
    without ground truth (every 5th)."""
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        width, height = int(rng.integers(200, 640)), int(rng.integers(200, 480))
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id}.jpg"})
        if image_id % 5 == 0:
            continue
        for _ in range(int(rng.integers(1, 6))):
            w, h = float(rng.uniform(8, width / 2)), float(rng.uniform(8, height / 2))
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            crowd = int(rng.random() < 0.1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": crowd, "category_id": int(rng.choice(CATEGORY_IDS))})  # fmt: skip
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def noisy_predictions(gt: dict, rng: np.random.Generator, queries: int = 12) -> dict:
    """Per-image predictions: jittered copies of the gt boxes (some relabelled) plus random boxes, scores
    with ties; every 7th image has no detections at all. Tensors for even ids, numpy for odd ids."""
    by_image: dict[int, list] = {image["id"]: [] for image in gt["images"]}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    predictions = {}
    for image in gt["images"]:
        image_id = image["id"]
        if image_id % 7 == 0:
            predictions[image_id] = {"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long),
                                     "boxes": torch.zeros(0, 4)}  # fmt: skip
            continue
        boxes, labels = [], []
        for ann in by_image[image_id]:
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
            boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
            labels.append(ann["category_id"] if rng.random() < 0.8 else int(rng.choice(CATEGORY_IDS)))
        while len(boxes) < queries:
            x0, y0 = rng.uniform(0, image["width"] - 10), rng.uniform(0, image["height"] - 10)
            boxes.append([x0, y0, x0 + rng.uniform(4, 150), y0 + rng.uniform(4, 150)])
            labels.append(int(rng.choice(CATEGORY_IDS)))
        n_true = len(by_image[image_id])  # true boxes score higher; rounding makes ties across images
        scores = np.round(
            np.concatenate([rng.uniform(0.3, 1, n_true), rng.uniform(0, 0.7, len(boxes) - n_true)]), 2
        )
        arrays = (scores.astype(np.float32), np.array(labels), np.array(boxes, dtype=np.float32))
        if image_id % 2 == 0:
            arrays = tuple(torch.from_numpy(a) for a in arrays)
        predictions[image_id] = dict(zip(("scores", "labels", "boxes"), arrays, strict=True))
    return predictions


def perfect_predictions(gt: dict) -> dict:
    """The gt boxes themselves (crowd boxes left out: they are ignored) with score 1."""
    predictions = {image["id"]: {"scores": [], "labels": [], "boxes": []} for image in gt["images"]}
    for ann in gt["annotations"]:
        if ann["iscrowd"]:
            continue
        x, y, w, h = ann["bbox"]
        entry = predictions[ann["image_id"]]
        entry["scores"].append(1.0)
        entry["labels"].append(ann["category_id"])
        entry["boxes"].append([x, y, x + w, y + h])
    return {k: {name: np.array(v, dtype=np.float64) for name, v in p.items()} for k, p in predictions.items()}


def pycocotools_direct(gt_path, detections_path) -> tuple[list[float], str]:
    """pycocotools' own evaluation of a written detections json, as a user would run it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        coco_gt = COCO(str(gt_path))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(detections_path)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        start = len(captured.getvalue())
        coco_eval.summarize()
    return [float(v) for v in coco_eval.stats], captured.getvalue()[start:].strip("\n")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    gt = make_gt(rng)
    gt_path = tmp_path_factory.mktemp("coco") / "instances.json"
    gt_path.write_text(json.dumps(gt))
    return gt_path, gt, noisy_predictions(gt, rng)


def run_evaluator(gt_source, predictions, backend: str) -> CocoEvaluator:
    evaluator = CocoEvaluator(gt_source, backend=backend)
    items = list(predictions.items())
    for start in range(0, len(items), 4):  # batches, as the eval loop feeds them
        evaluator.process(dict(items[start : start + 4]))
    evaluator.evaluate()
    return evaluator


def test_pycocotools_backend_equals_pycocotools_on_written_json(dataset, tmp_path):
    gt_path, _, predictions = dataset
    evaluator = run_evaluator(gt_path, predictions, "pycocotools")
    detections = evaluator.write_detections(tmp_path / "detections.json")
    expected, expected_summary = pycocotools_direct(gt_path, detections)
    metrics = evaluator.evaluate()
    assert np.allclose(metrics["stats"], expected, atol=1e-6, rtol=0)
    assert [metrics[name] for name in STAT_NAMES] == metrics["stats"]
    assert evaluator.summary() == expected_summary
    assert 0.05 < metrics["AP"] < 0.95 and metrics["APs"] != -1  # a non-trivial score


def test_results_hold_every_query_in_xywh(dataset, tmp_path):
    gt_path, _, predictions = dataset
    evaluator = run_evaluator(gt_path, predictions, "faster")
    results = evaluator.results()
    assert len(results) == sum(len(p["scores"]) for p in predictions.values())
    first_id = min(i for i, p in predictions.items() if len(p["scores"]))
    x0, y0, x1, y1 = np.asarray(predictions[first_id]["boxes"][0], dtype=np.float64)
    assert results[0]["image_id"] == first_id
    assert np.allclose(results[0]["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-4)
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    written = json.loads(evaluator.write_detections(tmp_path / "out" / "d.json").read_text())
    assert written == results and not list((tmp_path / "out").glob("*.tmp"))


def test_backends_agree(dataset):
    gt_path, gt, predictions = dataset
    reference = run_evaluator(gt_path, predictions, "pycocotools").evaluate()["stats"]
    faster = run_evaluator(gt, predictions, "faster").evaluate()["stats"]
    assert np.allclose(faster, reference, atol=1e-4, rtol=0), (faster, reference)


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_perfect_predictions_give_ap_one(dataset, backend):
    _, gt, _ = dataset
    metrics = run_evaluator(gt, perfect_predictions(gt), backend).evaluate()
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert metrics[name] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_empty_predictions_give_zero(dataset, backend):
    gt_path, gt, _ = dataset
    empty = {image["id"]: {"scores": [], "labels": [], "boxes": np.zeros((0, 4))} for image in gt["images"]}
    evaluator = run_evaluator(gt_path, empty, backend)
    assert evaluator.results() == []
    assert all(v in (0.0, -1.0) for v in evaluator.evaluate()["stats"])
    assert evaluator.evaluate()["AP"] == 0.0
    assert len(evaluator.summary().splitlines()) == 12
    evaluator.reset()
    assert evaluator.evaluate()["AP"] == 0.0  # nothing processed: all gt images, no detections


def test_empty_bucket_reports_minus_one(tmp_path):
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0,
                           "category_id": 1}],
          "categories": [{"id": 1, "name": "a"}]}  # fmt: skip
    pred = {1: {"scores": [0.9], "labels": [1], "boxes": [[10, 10, 60, 60]]}}
    stats = {b: run_evaluator(gt, pred, b).evaluate() for b in ("pycocotools", "faster")}
    for metrics in stats.values():
        assert metrics["APs"] == -1 and metrics["APl"] == -1 and metrics["APm"] == pytest.approx(1.0)
    assert "-1.000" in format_summary(stats["faster"]["stats"])


def test_unknown_category_is_kept_but_not_scored(dataset, caplog):
    _, gt, _ = dataset
    perfect = perfect_predictions(gt)
    image_id = next(i for i, p in perfect.items() if len(p["scores"]))
    p = perfect[image_id]
    perfect[image_id] = {"scores": np.append(p["scores"], 0.99), "labels": np.append(p["labels"], 99),
                         "boxes": np.vstack([p["boxes"], [[0, 0, 10, 10]]])}  # fmt: skip
    for backend in ("pycocotools", "faster"):
        evaluator = run_evaluator(gt, perfect, backend)
        with caplog.at_level(logging.WARNING, logger="detr_core.evaluation.coco"):
            assert evaluator.evaluate()["AP"] == pytest.approx(1.0)
        assert any(r["category_id"] == 99 for r in evaluator.results())
    assert "absent from the ground truth" in caplog.text


def test_unknown_image_and_bad_shapes_raise(dataset):
    _, gt, _ = dataset
    evaluator = CocoEvaluator(gt)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluator.process({10_000: {"scores": [], "labels": [], "boxes": np.zeros((0, 4))}})
    with pytest.raises(ValueError, match="lengths differ"):
        evaluator.process({1: {"scores": [0.5, 0.2], "labels": [1], "boxes": [[0, 0, 1, 1]]}})
    with pytest.raises(ValueError, match="backend"):
        CocoEvaluator(gt, backend="nope")


def test_repeated_images_count_once_and_gt_object_accepted(dataset):
    from pycocotools.coco import COCO

    gt_path, gt, predictions = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
    once = run_evaluator(coco_gt, predictions, "faster").evaluate()
    twice = CocoEvaluator(coco_gt, backend="faster")
    twice.process(predictions)
    twice.process(dict(list(predictions.items())[:5]))  # DistributedSampler-style padding repeats
    assert twice.evaluate() == once


def _ddp_worker(rank: int, world_size: int, init_file: str, gt: dict, predictions: dict, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        evaluator = CocoEvaluator(gt, backend="faster")
        ids = sorted(predictions)
        evaluator.process({i: predictions[i] for i in ids[rank::world_size]})
        evaluator.synchronize_between_processes()
        queue.put((rank, evaluator.evaluate()["stats"], len(evaluator.image_ids)))
    finally:
        dist.destroy_process_group()


def test_synchronize_gathers_across_two_gloo_ranks(dataset, tmp_path):
    import torch.multiprocessing as mp

    _, gt, predictions = dataset
    numpy_predictions = {k: {n: np.asarray(v) for n, v in p.items()} for k, p in predictions.items()}
    expected = run_evaluator(gt, numpy_predictions, "faster").evaluate()["stats"]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), gt, numpy_predictions, queue),
                       nprocs=2, start_method="spawn")  # fmt: skip
    outputs = [queue.get() for _ in range(2)]
    for _, stats, n_images in outputs:
        assert n_images == len(gt["images"]) and stats == expected


def test_synchronize_is_noop_without_process_group(dataset):
    _, gt, predictions = dataset
    evaluator = CocoEvaluator(gt)
    evaluator.process(predictions)
    before = evaluator.results()
    evaluator.synchronize_between_processes()
    assert evaluator.results() == before


@pytest.mark.parametrize("spoil, message", [
    (lambda gt: gt["images"][1].update(id=gt["images"][0]["id"]), "duplicate image id"),
    (lambda gt: gt["annotations"][1].update(id=gt["annotations"][0]["id"]), "duplicate annotation id"),
    (lambda gt: gt["annotations"][0].update(image_id=10**6), r"reference image ids not in images\[\]"),
    (lambda gt: gt["annotations"][0].update(category_id=10**6), r"reference category ids not in categories\[\]"),
])
def test_inconsistent_ground_truth_is_refused(dataset, tmp_path, spoil, message):
    """The loader's whole-file rules hold for the evaluator too, whatever it is given (a path or a dict)."""
    gt = json.loads(json.dumps(dataset[1]))
    spoil(gt)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError, match=f"gt.json: .*{message}"):
        CocoEvaluator(str(path))
    with pytest.raises(ValueError, match=f"ground truth: .*{message}"):
        CocoEvaluator(gt)
