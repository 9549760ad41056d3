"""Class maps: the COCO names table against the issue's list, resolution by ids and names, remapping."""

from __future__ import annotations

import json

import pytest
import torch

from detr_core.data.class_map import (
    COCO_CLASSES,
    ClassMapError,
    load_class_map,
    mismatch_warning,
)
from detr_core.data.voc import VOC_CLASSES

#: From the issue: VOC name -> (COCO name, COCO id).
ISSUE = {"aeroplane": ("airplane", 5), "bicycle": ("bicycle", 2), "bird": ("bird", 16), "boat": ("boat", 9),
         "bottle": ("bottle", 44), "bus": ("bus", 6), "car": ("car", 3), "cat": ("cat", 17), "chair": ("chair", 62),
         "cow": ("cow", 21), "diningtable": ("dining table", 67), "dog": ("dog", 18), "horse": ("horse", 19),
         "motorbike": ("motorcycle", 4), "person": ("person", 1), "pottedplant": ("potted plant", 64),
         "sheep": ("sheep", 20), "sofa": ("couch", 63), "train": ("train", 7), "tvmonitor": ("tv", 72)}
VOC_NAMES = dict(enumerate(VOC_CLASSES))


def test_coco_table_and_coco_voc_agree_with_the_issue():
    assert len(COCO_CLASSES) == 91 and COCO_CLASSES.count("N/A") == 11
    for _, (coco_name, coco_id) in ISSUE.items():
        assert COCO_CLASSES[coco_id] == coco_name
    resolved = load_class_map("coco-voc", model_names=(), num_model_classes=91, data_names=VOC_NAMES)
    assert resolved.model_to_data == {coco_id: VOC_CLASSES.index(voc) for voc, (_, coco_id) in ISSUE.items()}


def test_coco_voc_on_one_based_ids_resolves_by_name():
    one_based = {i + 1: n for i, n in enumerate(VOC_CLASSES)}
    resolved = load_class_map("coco-voc", model_names=(), num_model_classes=91, data_names=one_based)
    assert resolved.model_to_data[1] == 15 and resolved.model_to_data[5] == 1  # person, aeroplane


def test_json_by_ids_and_names_and_remap(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"17": 2, "dog": "b", "1": 0}))
    resolved = load_class_map(str(path), model_names=(), num_model_classes=91, data_names={0: "a", 1: "b", 2: "c"})
    assert resolved.model_to_data == {17: 2, 18: 1, 1: 0}
    keep, mapped = resolved.remap_labels(torch.tensor([17, 25, 1, 18, 91]))
    assert keep.tolist() == [True, False, True, True, False] and mapped[keep].tolist() == [2, 0, 1]
    with pytest.raises(ClassMapError, match="model class id 17 is out of range"):
        load_class_map(str(path), model_names=("cat", "dog2"), num_model_classes=2, data_names={0: "a"})


def test_guardrail_silent_when_names_agree_and_suggests_a_file_otherwise():
    assert mismatch_warning((), 91, {1: "person", 3: "car", 18: "dog"}) is None
    line = mismatch_warning(("a", "b", "c"), 3, {0: "b", 1: "a", 2: "c"})
    assert "disagree on 2 of the 3 ids" in line and "0: model 'a' vs dataset 'b'" in line and "FILE.json" in line
    assert mismatch_warning((), 7, {0: "x"}) is None  # no names on the model side: nothing to compare
