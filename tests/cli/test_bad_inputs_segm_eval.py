"""Malformed segmentation data read by ``eval --masks`` (the real loader path of a segmentation model): COCO
instance masks and COCO panoptic files, one error line each (the bad-input matrix, segmentation data)."""

from __future__ import annotations

import json

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
