"""CocoPanoptic on the shapes panoptic files (round trip) and on hand-made bad inputs (one line each)."""

from __future__ import annotations

import json
import logging

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision.ops import box_convert

from detr_core.data import CocoDetection, DatasetError, ShapesParams, generate_shapes
from detr_core.data.coco_panoptic import CocoPanoptic, read_panoptic_png
from detr_core.data.shapes_panoptic import STUFF_CLASSES, is_thing_map
from detr_core.data.transforms import make_shapes_train_transforms
from detr_core.segmentation.panoptic_format import id_to_rgb, rgb_to_id
from tests.data import write_image

SMALL = ShapesParams(seed=5, image_size=64, train_count=6, val_count=4)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("pan") / "s", SMALL, progress=False, panoptic=True)


def _panoptic(root, split: str = "val", **kwargs) -> CocoPanoptic:
    return CocoPanoptic.from_root(root, split, **kwargs)


def test_round_trip_covers_every_pixel_once_with_json_areas_and_boxes(shapes_root):
    ds = _panoptic(shapes_root, "train")
    data = json.loads(ds.ann_file.read_text())
    assert len(ds) == 6 and ds.num_classes == 6 + len(STUFF_CLASSES) and ds.is_thing == is_thing_map(SMALL)
    for index, ann in enumerate(data["annotations"]):
        _, target = ds[index]
        ids = rgb_to_id(np.asarray(PIL.Image.open(ds.png_path(ann["image_id"]))))
        masks = target["masks"]
        info = ann["segments_info"]
        assert (masks.sum(0) == 1).all() and (ids != 0).all()  # every pixel in exactly one segment, none void
        for row, segment in enumerate(info):
            np.testing.assert_array_equal(masks[row].numpy(), ids == segment["id"])
        assert target["labels"].tolist() == [s["category_id"] for s in info]
        assert masks.flatten(1).sum(1).tolist() == [s["area"] for s in info] == target["area"].tolist()
        boxes = box_convert(target["boxes"] * 64, "cxcywh", "xywh")
        torch.testing.assert_close(boxes, torch.tensor([s["bbox"] for s in info], dtype=torch.float32))
        assert {ds.is_thing[c] for c in target["labels"].tolist()} == {True, False}


def test_instances_json_masks_equal_the_panoptic_thing_masks(shapes_root):
    pan = _panoptic(shapes_root)
    inst = CocoDetection(shapes_root / "val2017", shapes_root / "annotations" / "instances_val2017.json", masks=True)
    assert inst.num_classes == 6 and len(inst) == len(pan)
    for index in range(len(pan)):
        _, p = pan[index]
        _, i = inst[index]
        things = torch.tensor([pan.is_thing[c] for c in p["labels"].tolist()], dtype=torch.bool)
        assert i["labels"].tolist() == p["labels"][things].tolist()
        assert torch.equal(i["masks"], p["masks"][things])
        torch.testing.assert_close(i["boxes"], p["boxes"][things])


def test_transforms_keep_rows_aligned(shapes_root):
    ds = _panoptic(shapes_root, "train", transforms=make_shapes_train_transforms(64))
    for index in range(len(ds)):
        image, target = ds[index]
        n = len(target["labels"])
        assert target["masks"].shape == (n, *image.shape[-2:]) and target["boxes"].shape == (n, 4)
        assert target["size"].tolist() == list(image.shape[-2:])


def test_png_id_codec():
    ids = np.array([[0, 1, 256], [65536, 0x010101 * 7, 256**3 - 1]])
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    assert rgb_to_id(np.array([[[1, 2, 3]]], dtype=np.uint8)).item() == 1 + 2 * 256 + 3 * 65536


# --- hand-made files -------------------------------------------------------------------------------------------

ID_A, ID_B, ID_C = 0x0A0B0C, 300, 0x000001  # PNG ids spanning R, G and B


def _write(tmp_path, segments=None, png_ids=None, *, image_hw=(20, 30), categories=None) -> tuple:
    """A one-image panoptic set: image 7 ``a.jpg``, PNG ``a.png`` from ``png_ids`` [H, W], the JSON."""
    write_image(tmp_path / "images" / "a.jpg", *image_hw, fmt="JPEG")
    if png_ids is None:
        png_ids = np.zeros(image_hw, dtype=np.int64)
        png_ids[:, :10], png_ids[:, 10:20], png_ids[:5, 20:] = ID_A, ID_B, ID_C
    (tmp_path / "pan").mkdir(exist_ok=True)
    PIL.Image.fromarray(id_to_rgb(png_ids)).save(tmp_path / "pan" / "a.png")
    segments = segments if segments is not None else [
        {"id": ID_A, "category_id": 1, "iscrowd": 0}, {"id": ID_B, "category_id": 40, "iscrowd": 0, "area": 99},
        {"id": ID_C, "category_id": 1, "iscrowd": 1}]
    categories = categories or [{"id": 1, "name": "cat", "isthing": 1}, {"id": 40, "name": "grass", "isthing": 0}]
    ann = tmp_path / "panoptic.json"
    ann.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.jpg", "height": image_hw[0], "width": image_hw[1]}],
                               "annotations": [{"image_id": 7, "file_name": "a.png", "segments_info": segments}],
                               "categories": categories}))
    return tmp_path / "images", ann, tmp_path / "pan"


def test_hand_made_target_crowd_dropped_void_and_json_area(tmp_path):
    ds = CocoPanoptic(*_write(tmp_path))
    assert ds.is_thing == {1: True, 40: False} and ds.num_classes == 41
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 40] and target["iscrowd"].tolist() == [0, 0]
    assert target["area"].tolist() == [200.0, 99.0]  # pixel count where the JSON gives none, else the JSON's
    torch.testing.assert_close(target["boxes"], torch.tensor([[5 / 30, 0.5, 10 / 30, 1.0], [15 / 30, 0.5, 10 / 30, 1.0]]))
    assert int(target["masks"].sum()) == 400  # the crowd block and the void block belong to no row
    _, with_crowd = CocoPanoptic(*_write(tmp_path), drop_crowd=False)[0]
    assert with_crowd["iscrowd"].tolist() == [0, 0, 1] and with_crowd["masks"][2].sum() == 50


def test_png_id_not_listed_is_void_said_once(tmp_path, caplog):
    segments = [{"id": ID_A, "category_id": 1, "iscrowd": 0}]
    ds = CocoPanoptic(*_write(tmp_path, segments))
    with caplog.at_level(logging.WARNING, logger="detr_core.data.coco_panoptic"):
        _, target = ds[0]
        ds[0]
    assert target["labels"].tolist() == [1] and int(target["masks"].sum()) == 200
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and f"[{ID_C}, {ID_B}] are not in segments_info; read as void" in warned[0]


def _bad_cases(tmp_path):
    """id -> (build the dataset and read it, substrings of the one-line error)."""
    def segment_absent():
        ids = np.full((20, 30), ID_A)
        return CocoPanoptic(*_write(tmp_path, png_ids=ids))[0]

    def png_missing():
        paths = _write(tmp_path)
        (paths[2] / "a.png").unlink()
        return CocoPanoptic(*paths)[0]

    def png_size():
        return CocoPanoptic(*_write(tmp_path, png_ids=np.full((20, 31), ID_A)))[0]

    def png_corrupt():
        paths = _write(tmp_path)
        (paths[2] / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        return CocoPanoptic(*paths)[0]

    def png_gray():
        paths = _write(tmp_path)
        PIL.Image.new("L", (30, 20)).save(paths[2] / "a.png")
        return CocoPanoptic(*paths)[0]

    def unknown_category():
        return CocoPanoptic(*_write(tmp_path, [{"id": ID_A, "category_id": 3}]))

    def duplicate_segment():
        return CocoPanoptic(*_write(tmp_path, [{"id": ID_A, "category_id": 1}, {"id": ID_A, "category_id": 40}]))

    def png_outside():
        paths = _write(tmp_path)
        data = json.loads(paths[1].read_text())
        data["annotations"][0]["file_name"] = "../x.png"
        paths[1].write_text(json.dumps(data))
        return CocoPanoptic(*paths)

    def edited(change):
        paths = _write(tmp_path)
        data = json.loads(paths[1].read_text())
        change(data)
        paths[1].write_text(json.dumps(data))
        return CocoPanoptic(*paths)

    def crowd_word():
        return CocoPanoptic(*_write(tmp_path, [{"id": ID_A, "category_id": 1, "iscrowd": "yes"}]))

    def area_word():
        return CocoPanoptic(*_write(tmp_path, [{"id": ID_A, "category_id": 1, "area": "x"}]))

    def two_annotations():
        return edited(lambda d: d["annotations"].append({**d["annotations"][0], "file_name": "b.png"}))

    def duplicate_image():
        return edited(lambda d: d["images"].append({**d["images"][0], "file_name": "b.jpg"}))

    return {
        "crowd_not_0_1": (crowd_word, ["panoptic.json", "image 7", f"segment {ID_A}: 'iscrowd' is 'yes'"]),
        "area_not_a_number": (area_word, ["panoptic.json", "image 7", f"segment {ID_A}: 'area' is 'x'"]),
        "two_annotations": (two_annotations, ["panoptic.json", "image 7: two annotations ('a.png' and 'b.png')"]),
        "duplicate_image": (duplicate_image, ["panoptic.json", "duplicate image id 7"]),
        "segment_absent_from_png": (segment_absent, ["pan/a.png", f"segment id {ID_B} of image 7", "no pixel"]),
        "png_missing": (png_missing, ["pan/a.png", "panoptic PNG is missing"]),
        "png_size": (png_size, ["pan/a.png", "20x31 (HxW)", "a.jpg is 20x30"]),
        "png_corrupt": (png_corrupt, ["pan/a.png", "not a readable image"]),
        "png_not_rgb": (png_gray, ["pan/a.png", "mode L, expected RGB"]),
        "unknown_category": (unknown_category, ["panoptic.json", "image 7", "category_id 3, not in 'categories'"]),
        "duplicate_segment": (duplicate_segment, ["panoptic.json", f"segment id {ID_A} is listed twice"]),
        "png_outside": (png_outside, ["panoptic.json: image 7", "'../x.png'", "outside"]),
    }


BAD_IDS = ["segment_absent_from_png", "png_missing", "png_size", "png_corrupt", "png_not_rgb", "unknown_category",
           "duplicate_segment", "png_outside", "crowd_not_0_1", "area_not_a_number", "two_annotations",
           "duplicate_image"]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_panoptic_input_is_one_line_naming_the_file(tmp_path, case):
    build, names = _bad_cases(tmp_path)[case]
    with pytest.raises(DatasetError) as caught:
        build()
    text = str(caught.value)
    assert "\n" not in text and all(n in text for n in names), text


def test_read_panoptic_png_decodes_ids(tmp_path):
    ids = np.array([[ID_A, ID_B], [0, ID_C]])
    PIL.Image.fromarray(id_to_rgb(ids)).save(tmp_path / "p.png")
    decoded = read_panoptic_png(tmp_path / "p.png")
    assert decoded.dtype == np.int64 and np.array_equal(decoded, ids)
