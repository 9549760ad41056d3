"""CocoDetection: target layout, label ids as in the file, crowd/degenerate handling, image fix-ups, errors."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
import torch

from detr_core.data import CocoDetection, DatasetError, load_coco_json, load_rgb_image
from detr_core.data.transforms import make_eval_transforms
from tests.data import write_coco, write_image

IMAGES = [{"id": 7, "file_name": "a.png", "height": 40, "width": 60},
          {"id": 9, "file_name": "b.png", "height": 30, "width": 30}]
ANNS = [
    {"id": 1, "image_id": 7, "category_id": 5, "bbox": [6, 4, 30, 20], "area": 600, "iscrowd": 0},
    {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1},
    {"id": 3, "image_id": 7, "category_id": 2, "bbox": [10, 10, 0, 5], "area": 0, "iscrowd": 0},
    {"id": 4, "image_id": 7, "category_id": 2, "bbox": [50, 30, 20, 20], "area": 400, "iscrowd": 0},
    {"id": 5, "image_id": 9, "category_id": 1, "bbox": [3, 3, 9, 9], "area": 81, "iscrowd": 0},
]


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, IMAGES, ANNS)


def test_target_layout_and_values(coco):
    ds = CocoDetection(*coco)
    assert len(ds) == 2 and ds.num_classes == 6
    assert ds.class_names == ["N/A", "cat", "dog", "N/A", "N/A", "fox"]
    image, target = ds[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.float32 and image.max() <= 1.0
    assert target["labels"].tolist() == [5, 2]  # crowd (id 2) and zero-width (id 3) gone, ids as in the file
    assert target["labels"].dtype == torch.int64
    assert target["image_id"].item() == 7 and target["image_id"].dtype == torch.int64
    assert target["orig_size"].tolist() == [40, 60] and target["size"].tolist() == [40, 60]
    assert target["iscrowd"].tolist() == [0, 0] and target["area"].tolist() == [600, 400]
    expected = torch.tensor([[21 / 60, 14 / 40, 30 / 60, 20 / 40],  # cx, cy, w, h of [6, 4, 30, 20]
                             [55 / 60, 35 / 40, 10 / 60, 10 / 40]])  # [50, 30, 20, 20] clipped to [50, 30, 10, 10]
    torch.testing.assert_close(target["boxes"], expected)
    assert target["boxes"].dtype == torch.float32


def test_boxes_relative_to_transformed_size(coco):
    ds = CocoDetection(*coco, transforms=make_eval_transforms(size=80, max_size=None))
    image, target = ds[0]
    assert image.shape[-2:] == (80, 120) and target["size"].tolist() == [80, 120]
    assert target["orig_size"].tolist() == [40, 60]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([21 / 60, 14 / 40, 30 / 60, 20 / 40]))


def test_dataloader_with_workers(coco):
    from detr_core.data import collate_fn

    loader = torch.utils.data.DataLoader(CocoDetection(*coco), batch_size=2, collate_fn=collate_fn, num_workers=1)
    images, mask, targets = next(iter(loader))
    assert images.shape == (2, 3, 40, 60) and mask[1, :, 30:].all() and not mask[0].any()
    assert [t["image_id"].item() for t in targets] == [7, 9]


@pytest.mark.parametrize(("mode", "fmt"), [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"),
                                           ("LA", "PNG"), ("1", "PNG")])
def test_odd_modes_become_rgb(tmp_path, mode, fmt):
    path = write_image(tmp_path / f"x.{fmt.lower()}", 12, 16, mode=mode, fmt=fmt, value=200)
    loaded = load_rgb_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (16, 12)
    assert loaded.fixups == [f"mode {PIL.Image.open(path).mode} converted to RGB"]


def test_16_bit_scaled_to_8_bit(tmp_path):
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(path)
    loaded = load_rgb_image(path)
    assert loaded.image.mode == "RGB" and np.asarray(loaded.image).min() == 255
    assert "converted to RGB" in loaded.fixups[0]


def test_exif_rotation_applied(tmp_path):
    img = PIL.Image.new("RGB", (40, 20))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    loaded = load_rgb_image(path)
    assert loaded.image.size == (20, 40)
    assert loaded.fixups == ["EXIF orientation 6 applied"]


def test_missing_corrupt_truncated_images_raise_dataset_error(tmp_path, coco):
    images_dir, _ = coco
    with pytest.raises(DatasetError, match=r"nope\.png: image file is missing"):
        load_rgb_image(images_dir / "nope.png")
    (images_dir / "bad.png").write_bytes(b"this is not an image")
    with pytest.raises(DatasetError, match=r"bad\.png: not a readable image"):
        load_rgb_image(images_dir / "bad.png")
    buf = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (images_dir / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DatasetError, match=r"cut\.jpg: image file is corrupt or truncated"):
        load_rgb_image(images_dir / "cut.jpg")


def test_getitem_names_file_of_missing_image(coco):
    images_dir, ann = coco
    (images_dir / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"b\.png: image file is missing"):
        CocoDetection(images_dir, ann)[1]
    assert issubclass(DatasetError, ValueError)


def test_unreadable_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: annotation file is not readable JSON"):
        load_coco_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a COCO annotation file"):
        CocoDetection(tmp_path, bad)


def test_nan_box_dropped(tmp_path):
    anns = [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [float("nan"), 1, 5, 5], "iscrowd": 0},
            {"id": 2, "image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    ds = CocoDetection(*write_coco(tmp_path, IMAGES[1:], anns))
    assert len(ds[0][1]["boxes"]) == 1


def test_dropped_boxes_are_one_counted_warning(coco, caplog):
    CocoDetection(*coco)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "1 annotation(s) have a box with NaN/inf coordinates or zero/negative size" in warned[0]
    assert "first: annotation 3" in warned[0]  # the zero-width one; the crowd box (id 2) is not counted


def test_outside_images_refused_unless_allowed(tmp_path, caplog):
    images_dir, ann = write_coco(tmp_path, [{**IMAGES[1], "file_name": "../outside.png"}], [])
    write_image(tmp_path / "outside.png", 30, 30, value=200)
    with pytest.raises(DatasetError, match=r"ann\.json: image 9: file_name '\.\./outside\.png' climbs out"):
        CocoDetection(images_dir, ann)
    ds = CocoDetection(images_dir, ann, allow_outside_images=True)
    assert ds[0][0].shape == (3, 30, 30) and "1 file_name(s) lie outside the images folder" in caplog.text


def test_build_dataset_refuses_duplicate_ids_for_every_caller(tmp_path):
    """train, eval and bench's data all come through build_dataset -> CocoDetection -> load_coco_json."""
    from detr_core.data import DatasetSource, build_dataset

    images_dir, ann = write_coco(tmp_path, [IMAGES[0], {**IMAGES[1], "id": 7}], [])
    source = DatasetSource(train_images=str(images_dir), train_ann=str(ann), val_images=str(images_dir),
                           val_ann=str(ann))
    for split in ("train", "val"):
        with pytest.raises(DatasetError, match=r"duplicate image id 7: images\[0\] \(file_name 'a\.png'\) and "
                                               r"images\[1\] \(file_name 'b\.png'\)"):
            build_dataset(source, split)


def test_worker_reraise_keeps_one_line(tmp_path):
    images_dir, ann = write_coco(tmp_path, IMAGES[1:], [])
    (images_dir / "b.png").unlink()
    loader = torch.utils.data.DataLoader(CocoDetection(images_dir, ann), num_workers=1, collate_fn=list)
    with pytest.raises(DatasetError) as caught:
        next(iter(loader))
    assert str(caught.value) == f"{images_dir / 'b.png'}: image file is missing"
