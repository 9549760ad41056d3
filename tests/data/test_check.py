"""Dataset checks: every bad-input case gives one clear error line or a counted fix-up."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from detr_core.data import CocoDetection, check_coco, check_voc, validate_num_classes
from detr_core.data.check import FIX_CLIPPED, FIX_CROWD, FIX_DEGENERATE, FIX_EXIF, FIX_NONFINITE
from tests.data import write_coco, write_image, write_voc

GOOD_IMAGES = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]


def ann(ann_id, bbox, category_id=1, image_id=1, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, **extra}


def check_with(tmp_path, annotations, images=GOOD_IMAGES, num_classes=None):
    images_dir, path = write_coco(tmp_path, images, annotations)
    return check_coco(path, images_dir, num_classes), images_dir, path


def test_clean_dataset_report(tmp_path):
    report, _, _ = check_with(tmp_path, [ann(1, [1, 2, 10, 10]), ann(2, [5, 5, 5, 5], category_id=5)])
    assert report.ok and report.num_images == 1 and report.num_annotations == 2
    assert report.boxes_per_class == {"cat": 1, "fox": 1}
    assert report.size_histogram == {"<= 64": 1}
    text = report.format()
    assert "images: 1" in text and "  cat: 1" in text and "0 error(s), 0 warning(s)" in text


def test_missing_image_file(tmp_path):
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, [])
    (images_dir / "a.png").unlink()
    report = check_coco(path, images_dir)
    assert report.errors == [f"image 1: {images_dir / 'a.png'}: image file is missing"]


def test_corrupt_and_truncated_image_files(tmp_path):
    images = GOOD_IMAGES + [{"id": 2, "file_name": "b.jpg", "height": 64, "width": 64}]
    images_dir, path = write_coco(tmp_path, images, [])
    (images_dir / "a.png").write_bytes(b"garbage")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    PIL.Image.fromarray(noise).save(images_dir / "b.jpg")
    data = (images_dir / "b.jpg").read_bytes()
    (images_dir / "b.jpg").write_bytes(data[: len(data) // 2])
    report = check_coco(path, images_dir)
    assert len(report.errors) == 2
    assert report.errors[0].startswith("image 1:") and "a.png: not a readable image" in report.errors[0]
    assert report.errors[1].startswith("image 2:") and "b.jpg: image file is corrupt or truncated" in report.errors[1]


def test_unreadable_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    report = check_coco(bad, tmp_path)
    assert len(report.errors) == 1 and "bad.json: annotation file is not readable JSON" in report.errors[0]


def test_annotation_to_missing_image(tmp_path):
    report, _, _ = check_with(tmp_path, [ann(12, [1, 1, 5, 5], image_id=99)])
    assert report.errors == ["annotation 12 (image 99): image_id 99 is not in 'images'"]


def test_category_absent_or_too_large(tmp_path):
    report, _, _ = check_with(tmp_path, [ann(3, [1, 1, 5, 5], category_id=4), ann(4, [1, 1, 5, 5], category_id=5)],
                              num_classes=5)
    assert report.errors[0] == "annotation 3 (image 1): category_id 4 is not in 'categories' (ids [1, 2, 5])"
    assert report.errors[1] == ("annotation 4 (image 1): category_id 5 does not fit num_classes=5 "
                                "(ids must be 0..4)")


def test_box_fixups_counted(tmp_path):
    report, images_dir, path = check_with(tmp_path, [
        ann(1, [-3, 2, 10, 10]),  # out of bounds -> clipped
        ann(2, [5, 5, 0, 4]),  # zero width -> dropped
        ann(3, [5, 5, -4, 4]),  # negative -> dropped
        ann(4, [None, 5, 4, 4]),  # NaN (null in JSON) -> dropped
        ann(5, [1, 1, 3, 3], iscrowd=1),  # crowd -> not a training target
        ann(6, [55, 30, 20, 20]),  # partly outside -> clipped
        ann(7, [1, 2, 3]),  # malformed -> error
    ])
    assert report.fixups[FIX_CLIPPED] == 2 and report.fixups[FIX_DEGENERATE] == 2
    assert report.fixups[FIX_NONFINITE] == 1 and report.fixups[FIX_CROWD] == 1
    assert report.errors == ["annotation 7 (image 1): bbox [1, 2, 3] is not four numbers [x, y, w, h]"]
    assert any(w.startswith("annotation 2 (image 1): box has zero or negative size (0x4)") for w in report.warnings)
    assert any(w.startswith("annotation 4 (image 1): box has NaN/inf coordinates") for w in report.warnings)
    assert any(w.startswith("annotation 1 (image 1): box x1,y1,x2,y2=[-3.0, 2.0, 7.0, 12.0] exceeds the 40x60 image")
               for w in report.warnings)
    assert report.boxes_per_class == {"cat": 2}
    # the dataset applies exactly those fix-ups (the malformed one aside)
    data = json.loads(path.read_text())
    data["annotations"] = data["annotations"][:-1]
    path.write_text(json.dumps(data))
    assert len(CocoDetection(images_dir, path)[0][1]["boxes"]) == 2


@pytest.mark.parametrize(("mode", "fmt"), [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"),
                                           ("I;16", "PNG")])
def test_odd_image_modes_counted(tmp_path, mode, fmt):
    images_dir, path = write_coco(tmp_path, [], [])
    images_dir.mkdir()
    name = f"m.{fmt.lower()}"
    if mode == "I;16":
        PIL.Image.fromarray(np.full((40, 60), 300, dtype=np.uint16)).save(images_dir / name)
    else:
        write_image(images_dir / name, 40, 60, mode=mode, fmt=fmt)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": name, "height": 40, "width": 60}],
                                "annotations": [], "categories": []}))
    report = check_coco(path, images_dir)
    assert report.ok
    opened = PIL.Image.open(images_dir / name).mode
    assert report.fixups == {f"mode {opened} converted to RGB": 1}


def test_exif_rotation_counted_and_size_mismatch(tmp_path):
    images_dir, path = write_coco(tmp_path, [], [])
    images_dir.mkdir()
    img = PIL.Image.new("RGB", (60, 40))
    exif = img.getexif()
    exif[0x0112] = 8
    img.save(images_dir / "r.jpg", exif=exif.tobytes())
    images = [{"id": 1, "file_name": "r.jpg", "height": 60, "width": 40},
              {"id": 2, "file_name": "r.jpg", "height": 40, "width": 60}]
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    report = check_coco(path, images_dir)
    assert report.fixups[FIX_EXIF] == 2
    assert report.errors == [f"image 2: {images_dir / 'r.jpg'}: annotation says 40x60 (HxW), the file is 60x40"]


def test_check_voc(tmp_path):
    root = write_voc(tmp_path)
    report = check_voc(root)
    assert report.ok and report.num_images == 3 and report.num_annotations == 5
    assert report.boxes_per_class["chair"] == 1 and report.fixups["difficult objects (kept, flagged)"] == 2
    voc = root / "VOC2007"
    (voc / "JPEGImages" / "000007.jpg").unlink()
    xml = voc / "Annotations" / "000009.xml"
    xml.write_text(xml.read_text().replace("<xmax>20</xmax>", "<xmax>90</xmax>").replace("tvmonitor", "tv"))
    report = check_voc(root)
    assert report.errors[0] == f"000007.xml: {voc / 'JPEGImages' / '000007.jpg'}: image file is missing"
    assert report.errors[1] == "000009.xml object 1 (tv): unknown VOC class 'tv'"
    assert report.fixups[FIX_CLIPPED] == 1
    assert check_voc(tmp_path / "nowhere").errors[0].endswith("(expected a VOCdevkit or VOC2007 folder)")


def test_validate_num_classes(tmp_path):
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, [ann(1, [1, 1, 5, 5], category_id=5)])
    validate_num_classes(path, 6)
    validate_num_classes(CocoDetection(images_dir, path), 6)
    with pytest.raises(ValueError, match=r"ids \[5\] do not fit num_classes=5: DETR needs num_classes = max "
                                         r"category id \+ 1 = 6"):
        validate_num_classes(path, 5)
    with pytest.raises(ValueError, match="do not fit num_classes=3"):
        validate_num_classes(json.loads(path.read_text()), 3)
