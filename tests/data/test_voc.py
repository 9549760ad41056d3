"""VOC reader: labels, difficult handling, split resolution, and the voc2coco round trip via pycocotools."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO

from detr_core.data import VOC_CLASSES, DatasetError, VocDetection, voc_to_coco
from detr_core.data.voc import parse_voc_xml, resolve_voc_dir
from tests.data import VOC_SAMPLES, write_voc


@pytest.fixture
def voc(tmp_path):
    return write_voc(tmp_path)


def test_standard_class_order():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[14] == "person" and VOC_CLASSES[-1] == "tvmonitor"


def test_targets_labels_and_difficult(voc):
    ds = VocDetection(voc, split="train")
    assert len(ds) == 2 and ds.num_classes == 20 and ds.class_names[8] == "chair"
    image, target = ds[0]  # 000005: 50x80, chair + difficult person
    assert image.shape == (3, 50, 80)
    assert target["labels"].tolist() == [VOC_CLASSES.index("chair"), VOC_CLASSES.index("person")]
    assert target["difficult"].tolist() == [False, True] and target["difficult"].dtype == torch.bool
    assert target["image_id"].item() == 5 and target["orig_size"].tolist() == [50, 80]
    # chair xmin=1,ymin=1,xmax=20,ymax=30 -> x1,y1,x2,y2 = 0,0,20,30 -> cx,cy,w,h normalised
    torch.testing.assert_close(target["boxes"][0], torch.tensor([10 / 80, 15 / 50, 20 / 80, 30 / 50]))


def test_remove_difficult_and_offset(voc):
    ds = VocDetection(voc, split="trainval", remove_difficult=True, category_id_offset=1)
    _, target = ds[0]
    assert target["labels"].tolist() == [VOC_CLASSES.index("chair") + 1]
    assert target["difficult"].tolist() == [False]
    assert ds.num_classes == 21 and ds.class_names[0] == "N/A"


def test_root_may_be_year_folder(voc):
    assert resolve_voc_dir(voc) == resolve_voc_dir(voc / "VOC2007")
    with pytest.raises(DatasetError, match="no VOC2012/Annotations"):
        resolve_voc_dir(voc, "2012")
    with pytest.raises(DatasetError, match=r"test\.txt: split file is missing"):
        VocDetection(voc, split="test")


@pytest.mark.parametrize("offset", [0, 1])
def test_voc2coco_round_trip(voc, tmp_path, offset):
    out = tmp_path / "val.json"
    voc_to_coco(voc, "trainval", out, category_id_offset=offset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))
    assert sorted(coco.getCatIds()) == list(range(offset, 20 + offset))
    assert coco.loadCats(offset)[0]["name"] == "aeroplane"
    assert len(coco.getImgIds()) == 3
    for stem, (h, w, objects) in VOC_SAMPLES.items():
        image_id = int(stem)
        assert coco.imgs[image_id]["height"] == h and coco.imgs[image_id]["width"] == w
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        for ann, (name, difficult, xmin, ymin, xmax, ymax) in zip(anns, objects, strict=True):
            # VOC 1-based inclusive pixels -> COCO 0-based edges: x = xmin - 1, w = xmax - xmin + 1
            assert ann["bbox"] == [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]
            assert ann["category_id"] == VOC_CLASSES.index(name) + offset
            assert ann["difficult"] == difficult and ann["iscrowd"] == 0


def test_voc2coco_remove_difficult_and_bad_offset(voc):
    coco = voc_to_coco(voc, "trainval", remove_difficult=True)
    assert len(coco["annotations"]) == 3
    with pytest.raises(ValueError, match="category_id_offset must be 0 or 1"):
        voc_to_coco(voc, "val", category_id_offset=2)


def test_bad_xml_and_unknown_class(voc):
    ann_dir = voc / "VOC2007" / "Annotations"
    (ann_dir / "000007.xml").write_text("<annotation><size>")
    with pytest.raises(DatasetError, match=r"000007\.xml: malformed XML"):
        parse_voc_xml(ann_dir / "000007.xml")
    text = (ann_dir / "000005.xml").read_text().replace("<name>chair</name>", "<name>unicorn</name>")
    (ann_dir / "000005.xml").write_text(text)
    with pytest.raises(DatasetError, match=r"000005\.xml: unknown VOC class 'unicorn'"):
        VocDetection(voc, split="train")[0]
