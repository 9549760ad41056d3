"""The panoptic model's evaluation chain end to end: outputs -> masks + panoptic maps -> mask AP and PQ.

Oracle outputs built from the ground truth (one query per segment, its class certain, its mask logits
+-20 where the segment is) must score PQ = SQ = RQ = 1 and mask AP = box AP = 1 on the shapes panoptic
files; padded batches must score exactly as the images one at a time; a shifted mask must lose PQ."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detr_core.data.batching import collate_fn
from detr_core.data.coco_panoptic import CocoPanoptic
from detr_core.data.shapes import ShapesParams, generate_shapes
from detr_core.data.sources import DatasetSource
from detr_core.evaluation.ground_truth import coco_ground_truth, make_evaluator
from detr_core.evaluation.segmentation import canvas_masks, one_based

QUERIES = 12
STRIDE = 1  # mask logits at the canvas resolution: the chain must then be exact


@pytest.fixture(scope="module")
def panoptic_val(tmp_path_factory):
    root = generate_shapes(tmp_path_factory.mktemp("pan"), ShapesParams(image_size=64, train_count=1, val_count=6,
                                                                        max_objects=3), progress=False, panoptic=True)
    return CocoPanoptic(root / "val2017", root / "annotations/panoptic_val2017.json", root / "panoptic_val2017")


def oracle_outputs(images: torch.Tensor, targets: list[dict], num_classes: int, *, shift: int = 0) -> dict:
    """One query per ground-truth segment: class logit 20 (others 0), its box, mask logits +-20 at stride 4 of
    the padded canvas (``shift`` pixels to the right); spare queries predict "no object"."""
    batch, _, height, width = images.shape
    logits = torch.zeros(batch, QUERIES, num_classes + 1)
    logits[..., -1] = 20.0
    boxes = torch.full((batch, QUERIES, 4), 0.5)
    masks = torch.full((batch, QUERIES, height, width), -20.0)
    for b, target in enumerate(targets):
        h, w = target["size"].tolist()
        for q, (label, mask) in enumerate(zip(target["labels"], target["masks"], strict=True)):
            logits[b, q, -1], logits[b, q, label] = 0.0, 20.0
            masks[b, q, :h, :w] = torch.where(torch.roll(mask, shift, dims=1), 20.0, -20.0)
        boxes[b, : len(target["labels"])] = target["boxes"]
    small = F.avg_pool2d(masks, STRIDE)
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": small}


def evaluate(dataset, batches: list[list[int]], *, shift: int = 0) -> dict:
    coco_gt = coco_ground_truth(dataset, DatasetSource())
    evaluator = make_evaluator(coco_gt, "pycocotools", masks=True, dataset=dataset, is_thing=dataset.is_thing)
    for indices in batches:
        images, _, targets = collate_fn([dataset[i] for i in indices])
        evaluator.process_batch(oracle_outputs(images, targets, dataset.num_classes, shift=shift), targets,
                                tuple(images.shape[-2:]))
    return evaluator.evaluate()


def test_oracle_outputs_score_one_everywhere(panoptic_val):
    result = evaluate(panoptic_val, [[i] for i in range(len(panoptic_val))])
    pq = result["panoptic"]
    assert pq["PQ"] == pytest.approx(1.0) and pq["PQ_th"] == pytest.approx(1.0) and pq["PQ_st"] == pytest.approx(1.0)
    assert (pq["Things"]["n"], pq["Stuff"]["n"]) == (6, 3)  # every shape and stuff class of the 6 images
    assert result["segm"]["AP"] == pytest.approx(1.0)
    assert result["bbox"]["AP"] == pytest.approx(1.0)


def test_a_padded_batch_scores_as_the_images_one_by_one(panoptic_val):
    alone = evaluate(panoptic_val, [[i] for i in range(len(panoptic_val))], shift=3)
    batched = evaluate(panoptic_val, [[0, 1, 2], [3, 4, 5]], shift=3)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert batched["panoptic"][key] == pytest.approx(alone["panoptic"][key], abs=1e-12), key
    assert batched["segm"]["AP"] == pytest.approx(alone["segm"]["AP"], abs=1e-12)


def test_shifted_masks_lose_quality(panoptic_val):
    shifted = evaluate(panoptic_val, [[i] for i in range(len(panoptic_val))], shift=6)
    assert 0.2 < shifted["panoptic"]["SQ"] < 0.9  # measured 0.41
    assert shifted["segm"]["AP"] < 0.5  # measured 0.25


def test_canvas_masks_crop_the_padding_before_resizing():
    """An image padded into a larger canvas gets the masks it gets alone (the reference's stretch would not)."""
    logits = torch.randn(1, 3, 12, 16)
    alone = canvas_masks(logits, torch.tensor([[48, 64]]), torch.tensor([[96, 128]]), (48, 64))[0]
    padded_logits = F.pad(logits, (0, 8, 0, 6), value=-5.0)  # canvas 72 x 96
    padded = canvas_masks(padded_logits, torch.tensor([[48, 64]]), torch.tensor([[96, 128]]), (72, 96))[0]
    inner = (slice(None), slice(None), slice(0, 88), slice(0, 124))  # away from the border the pad value blurs in
    assert torch.equal(padded[inner], alone[inner])


def test_one_based_ids_leave_zero_void():
    pan = {"segment_ids": torch.tensor([[0, 1], [1, 0]]), "segments_info": [{"id": 0, "category_id": 3},
                                                                             {"id": 1, "category_id": 4}]}
    out = one_based(pan)
    assert out["segment_ids"].tolist() == [[1, 2], [2, 1]]
    assert [s["id"] for s in out["segments_info"]] == [1, 2]
    assert one_based({"segment_ids": torch.zeros(2, 2, dtype=torch.long), "segments_info": []})["segment_ids"].sum() == 0


def test_box_and_mask_ap_cover_the_things_and_pq_the_stuff_too(panoptic_val, caplog):
    """COCO's instance metrics are over things: the ground truth for box / mask AP holds the thing segments
    and categories only, and the stuff detections are left out (no "absent category" warning)."""
    gt = coco_ground_truth(panoptic_val, DatasetSource()).dataset
    things = {c for c, thing in panoptic_val.is_thing.items() if thing}
    assert {c["id"] for c in gt["categories"]} == things and {a["category_id"] for a in gt["annotations"]} <= things
    stuff_segments = sum(1 for a in panoptic_val.data["annotations"] for s in a["segments_info"]
                         if s["category_id"] not in things)
    assert stuff_segments > 0
    with caplog.at_level("WARNING"):
        result = evaluate(panoptic_val, [[0, 1, 2]])
    assert not [r for r in caplog.records if "absent from the ground truth" in r.getMessage()]
    assert result["panoptic"]["Stuff"]["n"] == 3
