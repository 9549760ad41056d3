"""The COCO panoptic PNG / JSON format: id <-> RGB, PNG round trips, bboxes, atomic files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detr_core.segmentation import panoptic_format as fmt


def test_id_rgb_round_trip_and_channel_order():
    ids = np.array([[0, 1, 255], [256, 65536 + 2 * 256 + 3, 256**3 - 1]])
    rgb = fmt.id_to_rgb(ids)
    assert rgb[1, 1].tolist() == [3, 2, 1]  # R = id % 256, G = id // 256 % 256, B = id // 256**2
    assert np.array_equal(fmt.rgb_to_id(rgb), ids)
    with pytest.raises(ValueError, match="256"):
        fmt.id_to_rgb(np.array([[256**3]]))


def test_png_bytes_and_file_round_trip(tmp_path):
    ids = torch.randint(0, 70000, (13, 17))
    assert np.array_equal(fmt.decode_png(fmt.encode_png(ids)), ids.numpy())
    path = fmt.write_png(tmp_path / "pan" / "1.png", ids)
    assert np.array_equal(fmt.decode_png(path), ids.numpy())
    assert Image.open(path).mode == "RGB" and not list(tmp_path.glob("pan/.*"))  # no temp file left
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="grey.png.*RGB"):
        fmt.decode_png(tmp_path / "grey.png")


def test_bboxes_and_annotations_json(tmp_path):
    ids = np.zeros((6, 8), np.int64)
    ids[1:3, 2:7] = 5
    info = fmt.with_bboxes(ids, [{"id": 5, "isthing": True, "category_id": 1, "area": 10},
                                 {"id": 9, "isthing": False, "category_id": 2, "area": 0}])  # fmt: skip
    assert [s["bbox"] for s in info] == [[2, 1, 5, 2], [0, 0, 0, 0]]
    path = fmt.write_annotations_json(tmp_path / "pan.json", [{"image_id": 1, "file_name": "1.png",
                                      "segments_info": info}], categories=[], images=[])  # fmt: skip
    assert json.loads(path.read_text())["annotations"][0]["segments_info"][0]["bbox"] == [2, 1, 5, 2]
