"""PQ / SQ / RQ (detr_core.evaluation.panoptic): hand-computed cases with void and crowd regions, the
cross-check against torchmetrics' PanopticQuality, and the COCO panoptic folder + JSON evaluator."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

from detr_core.evaluation.panoptic import PanopticEvaluator, image_counts, panoptic_quality
from detr_core.segmentation.panoptic_format import write_png

CATEGORIES = {1: True, 2: True, 3: False, 4: False}  # category id -> isthing


def _hand_case(crowd_absorber_category: int = 2) -> tuple[tuple, tuple]:
    """8x8: gt 10, 11 (class 1, rows 0-1 halves), 20 (stuff 3, rows 2-5), 30 (class 2 crowd, row 6), void
    row 7. Prediction 1 (class 1, rows 0-1 cols 0-2), 2 (class 1, cols 3-4), 3 (stuff 3: rows 0-1
    cols 5-7 + rows 2-5), 4 (``crowd_absorber_category``, rows 6-7)."""
    gt = np.zeros((8, 8), np.int64)
    gt[0:2, 0:4], gt[0:2, 4:8], gt[2:6], gt[6] = 10, 11, 20, 30
    gt_segments = [{"id": 10, "category_id": 1, "iscrowd": 0, "area": 8},
                   {"id": 11, "category_id": 1, "iscrowd": 0, "area": 8},
                   {"id": 20, "category_id": 3, "iscrowd": 0, "area": 32},
                   {"id": 30, "category_id": 2, "iscrowd": 1, "area": 8}]  # fmt: skip
    pred = np.zeros((8, 8), np.int64)
    pred[0:2, 0:3], pred[0:2, 3:5], pred[0:2, 5:8], pred[2:6], pred[6:8] = 1, 2, 3, 3, 4
    pred_segments = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 3},
                     {"id": 4, "category_id": crowd_absorber_category}]  # fmt: skip
    return (gt, gt_segments), (pred, pred_segments)


def test_hand_computed_pq_with_void_and_crowd():
    """Class 1: pred 1 matches gt 10 (IoU 6/8), pred 2 is a FP (IoU 0.2 with gt 11), gt 11 a FN ->
    PQ 0.75 / 2 = 0.375, SQ 0.75, RQ 0.5. Stuff 3: pred 3 matches gt 20 with IoU 32/38. Pred 4 (class 2)
    lies on void + the class-2 crowd: not a FP; the crowd is no FN: class 2 is skipped (n counts 2)."""
    result = panoptic_quality([_hand_case()], categories=CATEGORIES)
    assert result["per_class"][1] == {"pq": 0.375, "sq": 0.75, "rq": 0.5, "tp": 1, "fp": 1, "fn": 1}
    assert result["per_class"][3]["pq"] == pytest.approx(32 / 38, abs=1e-12)
    assert result["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert result["Things"] == {"pq": 0.375, "sq": 0.75, "rq": 0.5, "n": 1}
    assert result["Stuff"] == pytest.approx({"pq": 32 / 38, "sq": 32 / 38, "rq": 1.0, "n": 1}, abs=1e-12)
    assert result["All"]["pq"] == pytest.approx((0.375 + 32 / 38) / 2, abs=1e-12) and result["All"]["n"] == 2


def test_crowd_absorbs_only_its_own_class_and_half_void_is_a_false_positive():
    """Pred 4 as class 1 over the class-2 crowd + void: only the void half is ignored, 8/16 is not > 0.5,
    so it is a FP of class 1 (PQ 0.75 / 2.5)."""
    result = panoptic_quality([_hand_case(crowd_absorber_category=1)], categories=CATEGORIES)
    assert result["per_class"][1] == {"pq": 0.3, "sq": 0.75, "rq": 0.4, "tp": 1, "fp": 2, "fn": 1}


def test_void_leaves_a_matched_union():
    """A prediction spilling 4 pixels onto void keeps IoU 1 with its gt segment (void leaves the union)."""
    gt = np.zeros((4, 4), np.int64)
    gt[:2] = 7
    pred = np.zeros((4, 4), np.int64)
    pred[:2], pred[2, :2], pred[2, 2:], pred[3] = 5, 5, 6, 6
    counts = image_counts(gt, [{"id": 7, "category_id": 1}], pred,
                          [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 4}], categories=CATEGORIES)  # fmt: skip
    assert counts[1].tp == 1 and counts[1].iou == 1.0 and 4 not in counts  # pred 6 is all void: ignored


@pytest.mark.parametrize("problem, match", [("unlisted", "in the id map but not in segments_info"),
                                            ("unused", "in segments_info but not in the id map"),
                                            ("category", "unknown category_id 9")])  # fmt: skip
def test_inconsistent_predictions_are_refused(problem, match):
    (gt, gt_segments), (pred, pred_segments) = _hand_case()
    if problem == "unlisted":
        pred_segments = pred_segments[1:]
    elif problem == "unused":
        pred_segments = [*pred_segments, {"id": 99, "category_id": 1}]
    else:
        pred_segments = [*pred_segments[:3], {"id": 4, "category_id": 9}]
    with pytest.raises(ValueError, match=match):
        image_counts(gt, gt_segments, pred, pred_segments, categories=CATEGORIES)


def _random_case(rng: np.random.Generator, size: int = 16) -> tuple[tuple, tuple]:
    """GT: random rectangles over void (0), stuff categories used once each; prediction: the same
    rectangles jittered by a pixel, some relabelled or dropped, over a class-4 stuff background (no
    predicted pixel is unlabelled)."""
    gt, gt_cats, rects = np.zeros((size, size), np.int64), {}, []
    for segment_id, category in enumerate(rng.permutation([1, 1, 1, 2, 2, 3, 4])[: rng.integers(3, 7)], 1):
        y, x = rng.integers(0, size - 3, 2)
        h, w = rng.integers(3, 9, 2)
        gt[y : y + h, x : x + w] = segment_id
        gt_cats[segment_id] = int(category)
        rects.append((y, x, h, w, int(category)))
    pred, pred_cats = np.full((size, size), 1, np.int64), {1: 4}
    for segment_id, (y, x, h, w, category) in enumerate(rects, 2):
        if category == 4 or rng.random() < 0.15:
            continue
        dy, dx = rng.integers(-1, 2, 2)
        pred[max(y + dy, 0) : y + dy + h, max(x + dx, 0) : x + dx + w] = segment_id
        pred_cats[segment_id] = category if rng.random() > 0.15 else int(rng.choice([1, 2, 3]))
    return _listed(gt, gt_cats), _listed(pred, pred_cats)


def _listed(ids: np.ndarray, categories: dict[int, int]) -> tuple[np.ndarray, list[dict]]:
    present = set(np.unique(ids).tolist())
    return ids, [{"id": s, "category_id": c, "iscrowd": 0} for s, c in categories.items() if s in present]


def _stuff_once(case: tuple[tuple, tuple]) -> bool:
    """torchmetrics merges all segments of a stuff category: keep cases with one per category."""
    for _, segments in case:
        stuff = [s["category_id"] for s in segments if not CATEGORIES[s["category_id"]]]
        if len(stuff) != len(set(stuff)):
            return False
    return True


def _torchmetrics_map(ids: np.ndarray, segments: list[dict]) -> torch.Tensor:
    """[H, W, 2] (category, instance) with category 0 (outside things/stuffs: torchmetrics' void) on void."""
    out = torch.zeros(*ids.shape, 2, dtype=torch.int64)
    for segment in segments:
        where = torch.from_numpy(ids == segment["id"])
        out[where] = torch.tensor([segment["category_id"], segment["id"]])
    return out


def test_equals_torchmetrics_on_random_cases_with_void():
    """Per class TP / FP / FN and PQ, SQ, RQ per class and averaged (all, things, stuff) equal
    torchmetrics' PanopticQuality within 1e-6 on 40 random images with void (no crowd: it has none)."""
    from torchmetrics.detection import PanopticQuality

    rng = np.random.default_rng(0)
    cases = [c for c in (_random_case(rng) for _ in range(80)) if _stuff_once(c)][:40]
    assert len(cases) == 40
    things, stuffs = [c for c, t in CATEGORIES.items() if t], [c for c, t in CATEGORIES.items() if not t]
    metric = PanopticQuality(things=things, stuffs=stuffs, return_sq_and_rq=True, return_per_class=True)
    for (gt, gt_segments), (pred, pred_segments) in cases:
        metric.update(_torchmetrics_map(pred, pred_segments)[None], _torchmetrics_map(gt, gt_segments)[None])
    theirs = metric.compute().numpy()  # [classes, 3] pq, sq, rq: things then stuff, sorted
    ours = panoptic_quality(cases, categories=CATEGORIES)
    order = sorted(things) + sorted(stuffs)
    for row, category in enumerate(order):
        mine = ours["per_class"][category]
        assert [mine["tp"], mine["fp"], mine["fn"]] == [int(metric.true_positives[row]),
                int(metric.false_positives[row]), int(metric.false_negatives[row])]  # fmt: skip
        np.testing.assert_allclose([mine["pq"], mine["sq"], mine["rq"]], theirs[row], atol=1e-6, rtol=0)
    assert all(ours["per_class"][c]["tp"] > 0 and ours["per_class"][c]["fp"] > 0 for c in (1, 2, 3))
    denominators = (metric.true_positives + 0.5 * (metric.false_positives + metric.false_negatives)).numpy()
    for group, rows in (("All", order), ("Things", sorted(things)), ("Stuff", sorted(stuffs))):
        active = [order.index(c) for c in rows if denominators[order.index(c)] > 0]
        np.testing.assert_allclose([ours[group][k] for k in ("pq", "sq", "rq")], theirs[active].mean(0), atol=1e-6)
    metric_avg = PanopticQuality(things=things, stuffs=stuffs, return_sq_and_rq=True)
    for (gt, gt_segments), (pred, pred_segments) in cases:
        metric_avg.update(_torchmetrics_map(pred, pred_segments)[None], _torchmetrics_map(gt, gt_segments)[None])
    np.testing.assert_allclose([ours["All"][k] for k in ("pq", "sq", "rq")], metric_avg.compute().numpy(), atol=1e-6)


def _torchmetrics_pq(case: tuple[tuple, tuple]) -> float:
    """torchmetrics' PQ with the crowd segments void (category 0); unlabelled predicted pixels (category 0)
    are refused unless ``allow_unknown_preds_category``, which makes them void."""
    from torchmetrics.detection import PanopticQuality

    (gt, gt_segments), (pred, pred_segments) = case
    visible = [s for s in gt_segments if not s.get("iscrowd")]
    metric = PanopticQuality(things=[1, 2], stuffs=[3, 4], allow_unknown_preds_category=True)
    metric.update(_torchmetrics_map(pred, pred_segments)[None], _torchmetrics_map(gt, visible)[None])
    return float(metric.compute())


def test_crowd_as_torchmetrics_void_agrees_only_for_predictions_of_the_crowds_class():
    """torchmetrics has no crowd; marking the crowd void gives COCO's PQ when only a prediction of the
    crowd's class lies on it, and differs when another class's does (COCO: a FP; torchmetrics: ignored)."""
    same_class = _hand_case(crowd_absorber_category=2)
    ours = panoptic_quality([same_class], categories=CATEGORIES)["All"]["pq"]
    assert _torchmetrics_pq(same_class) == pytest.approx(ours, abs=1e-6)
    other_class = _hand_case(crowd_absorber_category=1)
    ours = panoptic_quality([other_class], categories=CATEGORIES)["All"]["pq"]
    theirs = _torchmetrics_pq(other_class)
    assert ours == pytest.approx((0.3 + 32 / 38) / 2) and theirs == pytest.approx((0.375 + 32 / 38) / 2)


def test_evaluator_reads_a_coco_panoptic_folder(tmp_path):
    (gt, gt_segments), (pred, pred_segments) = _hand_case()
    write_png(tmp_path / "gt" / "a.png", gt)
    dataset = {"images": [{"id": 5, "file_name": "a.jpg", "height": 8, "width": 8}],
               "annotations": [{"image_id": 5, "file_name": "a.png", "segments_info": gt_segments}],
               "categories": [{"id": c, "name": str(c), "isthing": int(t)} for c, t in CATEGORIES.items()]}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    evaluator = PanopticEvaluator(tmp_path / "gt.json", tmp_path / "gt")
    evaluator.update(5, torch.from_numpy(pred), pred_segments)
    stats = evaluator.stats
    assert stats["PQ_th"] == 0.375 and stats["RQ_st"] == 1.0 and stats["PQ"] == pytest.approx((0.375 + 32 / 38) / 2)
    assert evaluator.summary().splitlines()[2].split() == ["All", "|", "60.9", "79.6", "75.0", "2"]
    with pytest.raises(ValueError, match="image id 6"):
        evaluator.update(6, pred, pred_segments)
    with PIL.Image.open(tmp_path / "gt" / "a.png") as image:
        image.convert("RGB").save(tmp_path / "gt" / "a.png", format="JPEG")  # lossy: ids would be noise
    with pytest.raises(ValueError, match=r"a\.png: panoptic PNG is a JPEG file, not a PNG"):
        evaluator.update(5, torch.from_numpy(pred), pred_segments)


def test_unlabelled_predicted_pixels_differ_from_torchmetrics():
    """A prediction covering 3 of a gt segment's 8 pixels, the other 5 unlabelled: COCO keeps them in the
    union (IoU 3/8: a FN and a FP, PQ 0); torchmetrics makes them void and drops them (IoU 1, PQ 1)."""
    gt = np.zeros((4, 4), np.int64)
    gt[:2] = 7
    pred = np.zeros((4, 4), np.int64)
    pred[0, :3] = 5
    case = ((gt, [{"id": 7, "category_id": 1, "iscrowd": 0}]), (pred, [{"id": 5, "category_id": 1}]))
    assert panoptic_quality([case], categories=CATEGORIES)["per_class"][1] == {
        "pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}  # fmt: skip
    assert _torchmetrics_pq(case) == 1.0


def _write_two_image_ground_truth(folder) -> tuple[dict, list]:
    """Image 5: the hand case; image 6: its prediction used as ground truth (a perfect image)."""
    (gt, gt_segments), (pred, pred_segments) = _hand_case()
    write_png(folder / "gt" / "a.png", gt)
    write_png(folder / "gt" / "b.png", pred)
    perfect = [{**s, "iscrowd": 0} for s in pred_segments]
    dataset = {"images": [{"id": 5, "file_name": "a.jpg"}, {"id": 6, "file_name": "b.jpg"}],
               "annotations": [{"image_id": 5, "file_name": "a.png", "segments_info": gt_segments},
                               {"image_id": 6, "file_name": "b.png", "segments_info": perfect}],
               "categories": [{"id": c, "name": str(c), "isthing": int(t)} for c, t in CATEGORIES.items()]}  # fmt: skip
    (folder / "gt.json").write_text(json.dumps(dataset))
    return dataset, _updates()


def _panoptic_ddp_worker(rank: int, world_size: int, folder, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder / 'init'}", rank=rank, world_size=world_size)
    try:
        evaluator = PanopticEvaluator(folder / "gt.json", folder / "gt")
        image_id, pred, segments = _updates()[rank]
        evaluator.update(image_id, pred, segments)
        evaluator.synchronize_between_processes()
        queue.put(evaluator.stats["All"])
    finally:
        dist.destroy_process_group()


def _updates() -> list:
    (_, _), (pred, pred_segments) = _hand_case()
    return [(5, pred, pred_segments), (6, pred, pred_segments)]


def test_evaluator_synchronizes_two_gloo_ranks(tmp_path):
    import torch.multiprocessing as mp

    _, updates = _write_two_image_ground_truth(tmp_path)
    single = PanopticEvaluator(tmp_path / "gt.json", tmp_path / "gt")
    for image_id, pred, segments in updates:
        single.update(image_id, pred, segments)
    expected = single.stats["All"]
    assert expected["n"] == 3 and expected["pq"] != panoptic_quality([_hand_case()], categories=CATEGORIES)["All"]["pq"]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_panoptic_ddp_worker, args=(2, tmp_path, queue), nprocs=2, start_method="spawn")
    assert [queue.get() for _ in range(2)] == [expected, expected]


def test_evaluator_names_the_image_of_a_bad_prediction(tmp_path):
    _, updates = _write_two_image_ground_truth(tmp_path)
    evaluator = PanopticEvaluator(tmp_path / "gt.json", tmp_path / "gt")
    with pytest.raises(ValueError, match=r"image 6 \(b.png\): gt and predicted segment_ids differ in size"):
        evaluator.update(6, np.zeros((3, 3), np.int64), [])
