"""Malformed segmentation data read by ``eval --masks`` (the real loader path of a segmentation model): COCO
instance masks and COCO panoptic files, one error line each (the bad-input matrix, segmentation data)."""

from __future__ import annotations

import json

import pytest

from detr_core.data import ShapesParams, generate_shapes
from tests.cli.bad_input import check_bad_input
from tests.conftest import reference_path
from tests.data import write_coco


def _segm_eval(tmp_path, data: list[str]) -> list:
    return ["eval", "--resume", reference_path("segm_tiny_checkpoint.pth"), *data, "--output-dir", tmp_path / "out",
            "--masks", "--batch-size", "1", "--no-progress"]


def test_eval_masks_malformed_instance_segmentation(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 48}]
    anns = [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400, "iscrowd": 0,
             "segmentation": {"size": [40, 49], "counts": [40 * 49]}}]
    images_dir, ann = write_coco(tmp_path, images, anns, categories=[{"id": 1, "name": "a"}])
    check_bad_input(_segm_eval(tmp_path, ["--val-images", images_dir, "--val-ann", ann]),
                    names=[str(ann), "image 1, annotation 4", "RLE size 40x49 does not match"])


def test_eval_masks_panoptic_segment_missing_from_png(tmp_path):
    root = generate_shapes(tmp_path / "pan", ShapesParams(seed=0, image_size=32, train_count=1, val_count=1),
                           progress=False, panoptic=True)
    ann = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["segments_info"].append({"id": 250 * 0x010101, "category_id": 6, "iscrowd": 0})
    ann.write_text(json.dumps(data))
    check_bad_input(_segm_eval(tmp_path, ["--coco-panoptic-path", root]),
                    names=["panoptic_val2017/000000000001.png", f"segment id {250 * 0x010101}", "no pixel"])


def _edit_first_segment(ann, **fields) -> int:
    data = json.loads(ann.read_text())
    segment = data["annotations"][0]["segments_info"][0]
    segment.update(fields)
    ann.write_text(json.dumps(data))
    return segment["id"]


@pytest.mark.parametrize(("field", "value"), [("iscrowd", "yes"), ("area", "many")])
def test_eval_masks_panoptic_segment_field_of_the_wrong_type(tmp_path, field, value):
    root = generate_shapes(tmp_path / "pan", ShapesParams(seed=0, image_size=32, train_count=1, val_count=1),
                           progress=False, panoptic=True)
    ann = root / "annotations" / "panoptic_val2017.json"
    segment = _edit_first_segment(ann, **{field: value})
    check_bad_input(_segm_eval(tmp_path, ["--coco-panoptic-path", root]),
                    names=[str(ann), "image 1", f"segment {segment}: '{field}' is '{value}'"])


def test_eval_masks_panoptic_two_annotations_of_one_image(tmp_path):
    root = generate_shapes(tmp_path / "pan", ShapesParams(seed=0, image_size=32, train_count=1, val_count=1),
                           progress=False, panoptic=True)
    ann = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(ann.read_text())
    data["annotations"].append({**data["annotations"][0], "file_name": "again.png"})
    ann.write_text(json.dumps(data))
    check_bad_input(_segm_eval(tmp_path, ["--coco-panoptic-path", root]),
                    names=[str(ann), "image 1: two annotations ('000000000001.png' and 'again.png')"])
