"""``check_coco_panoptic``: a clean shapes panoptic set passes; hand-made folders with planted problems give
exactly one line per problem (all of them, not the first), each naming the file and the image / segment id."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from detr_core.data import DatasetError, ShapesParams, generate_shapes
from detr_core.data.check import FIX_CROWD
from detr_core.data.check_panoptic import (
    FIX_AREA,
    FIX_BBOX,
    FIX_ISTHING,
    FIX_NO_ANNOTATION,
    FIX_VOID,
    check_coco_panoptic,
    segment_stats,
)
from detr_core.data.coco_panoptic import CocoPanoptic, masks_to_xyxy, panoptic_split_paths
from detr_core.segmentation.panoptic_format import id_to_rgb
from tests.data import write_image

ID_A, ID_B, ID_C = 0x0A0B0C, 300, 0x000001  # PNG ids spanning R, G and B
H, W = 20, 30
CATEGORIES = [{"id": 1, "name": "cat", "isthing": 1}, {"id": 4, "name": "grass", "isthing": 0}]


def good_ids(h: int = H, w: int = W) -> np.ndarray:
    """Segment ids [h, w]: A = columns 0..9, B = 10..19, C (crowd) = rows 0..4 of columns 20..29, void below."""
    ids = np.zeros((h, w), dtype=np.int64)
    ids[:, :10], ids[:, 10:20], ids[:5, 20:] = ID_A, ID_B, ID_C
    return ids


def good_segments() -> list[dict[str, Any]]:
    """``segments_info`` agreeing exactly with :func:`good_ids` (boxes, areas)."""
    return [{"id": ID_A, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 10, 20], "area": 200},
            {"id": ID_B, "category_id": 4, "iscrowd": 0, "bbox": [10, 0, 10, 20], "area": 200},
            {"id": ID_C, "category_id": 1, "iscrowd": 1, "bbox": [20, 0, 10, 5], "area": 50}]


@dataclass(frozen=True)
class PanopticFiles:
    """A hand-made reference-layout split: ``root/val2017/{id}.png`` images, ``root/panoptic_val2017/{id}.png``
    PNGs, ``root/annotations/panoptic_val2017.json``."""

    root: Path
    images: Path
    ann: Path
    pngs: Path

    def image(self, image_id: int) -> Path:
        return self.images / f"{image_id}.png"

    def png(self, image_id: int) -> Path:
        return self.pngs / f"{image_id}.png"

    def write_png(self, image_id: int, ids: np.ndarray) -> None:
        PIL.Image.fromarray(id_to_rgb(ids)).save(self.png(image_id))

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Rewrite the JSON after ``change(data)``."""
        data = json.loads(self.ann.read_text())
        change(data)
        self.ann.write_text(json.dumps(data))

    def segments(self, image_id: int) -> list[dict[str, Any]]:
        data = json.loads(self.ann.read_text())
        return next(a["segments_info"] for a in data["annotations"] if a["image_id"] == image_id)

    def set_segments(self, image_id: int, segments: list[dict[str, Any]]) -> None:
        def change(data: dict[str, Any]) -> None:
            next(a for a in data["annotations"] if a["image_id"] == image_id)["segments_info"] = segments
        self.edit(change)

    def check(self, **kwargs: Any):
        return check_coco_panoptic(self.ann, self.images, self.pngs, **kwargs)


def write_panoptic(root: Path, count: int = 1) -> PanopticFiles:
    """``count`` good images (ids 1..count, 20x30) with :func:`good_ids` PNGs and :func:`good_segments`."""
    files = PanopticFiles(root, *panoptic_split_paths(root, "val"))
    files.pngs.mkdir(parents=True)
    files.ann.parent.mkdir(parents=True)
    for image_id in range(1, count + 1):
        write_image(files.image(image_id), H, W)
        files.write_png(image_id, good_ids())
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in range(1, count + 1)]
    anns = [{"image_id": i, "file_name": f"{i}.png", "segments_info": good_segments()} for i in range(1, count + 1)]
    files.ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return files


def test_clean_shapes_panoptic_checks_with_no_problem(tmp_path):
    params = ShapesParams(seed=3, image_size=48, train_count=3, val_count=3)
    root = generate_shapes(tmp_path / "s", params, progress=False, panoptic=True)
    for split in ("train", "val"):
        images, ann, pngs = panoptic_split_paths(root, split)
        report = check_coco_panoptic(ann, images, pngs, num_classes=9)
        data = json.loads(ann.read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        segments = [s for a in data["annotations"] for s in a["segments_info"]]
        assert report.errors == [] and report.warnings == [] and sum(report.fixups.values()) == 0
        assert report.num_images == 3 and report.num_annotations == len(segments) > 6
        expected: dict[str, int] = {}
        for seg in segments:
            expected[names[seg["category_id"]]] = expected.get(names[seg["category_id"]], 0) + 1
        assert report.boxes_per_class == expected and report.size_histogram == {"<= 64": 3}


def test_segment_stats_equal_masks_to_xyxy_and_pixel_counts():
    rng = np.random.default_rng(0)
    ids = rng.choice([0, 7, ID_A, ID_B, 256**3 - 1], size=(37, 23), p=[0.4, 0.3, 0.2, 0.09, 0.01])
    ids[5:9, 3:6] = 99  # a compact block: box [3, 5, 6, 9]
    stats = segment_stats(ids)
    uniq = np.unique(ids)
    masks = torch.from_numpy(ids[None] == uniq[:, None, None])
    boxes = masks_to_xyxy(masks)
    assert sorted(stats) == uniq.tolist() and stats[99] == (12, (3, 5, 6, 9))
    for row, seg_id in enumerate(uniq.tolist()):
        assert stats[seg_id] == (int(masks[row].sum()), tuple(int(v) for v in boxes[row].tolist()))


def test_good_hand_made_folder_counts_crowd_and_void_free(tmp_path):
    report = write_panoptic(tmp_path, 2).check()
    assert report.ok and report.warnings == [] and report.num_images == 2 and report.num_annotations == 6
    assert report.boxes_per_class == {"cat": 2, "grass": 2} and report.fixups == {FIX_CROWD: 2}


def _plant_every_problem(files: PanopticFiles) -> None:
    """Images 1..8: 1 clean, 2 PNG missing, 3 PNG grey, 4 PNG 21x30, 5 image missing (PNG checked anyway),
    6 no annotation, 7 segment problems, 8 JSON segment problems; an annotation of image 99."""
    files.png(2).unlink()
    PIL.Image.new("L", (W, H)).save(files.png(3))
    taller = np.zeros((H + 1, W), dtype=np.int64)
    taller[:H] = good_ids()  # one void row more: same segments
    files.write_png(4, taller)
    files.image(5).unlink()
    ids = good_ids()
    ids[H - 1, W - 1] = 77  # not listed: void
    files.write_png(7, ids)
    seven = good_segments()
    seven[0]["bbox"] = [0, 0, 12, 20]  # 2 px wide of the mask's
    seven[1]["bbox"] = [10, 0, 11, 20]  # 1 px: within tolerance
    seven[1]["area"] = 150
    seven.append({"id": 5, "category_id": 1, "iscrowd": 0})  # listed, no pixel
    files.set_segments(7, seven)
    files.set_segments(8, good_segments() + [{"id": 6, "category_id": 3}, {"id": ID_B, "category_id": 1},
                                             {"id": 8, "category_id": 1, "iscrowd": "yes"},
                                             {"id": 9, "category_id": 1, "area": "big"}])

    def change(data: dict[str, Any]) -> None:
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 6]
        data["annotations"].append({"image_id": 99, "file_name": "99.png", "segments_info": []})
        del data["categories"][1]["isthing"]
    files.edit(change)


def test_every_planted_problem_is_one_line_naming_file_and_id(tmp_path):
    files = write_panoptic(tmp_path, 8)
    _plant_every_problem(files)
    report = files.check()
    ann, png = files.ann, files.png
    assert report.errors == [
        f"{ann}: image 8: segment 6 has category_id 3, not in 'categories'",
        f"{ann}: image 8: segment id {ID_B} is listed twice",
        f"{ann}: image 8: segment 8: 'iscrowd' is 'yes', not 0 or 1",
        f"{ann}: image 8: segment 9: 'area' is 'big', not a number",
        f"{ann}: annotation '99.png' names image_id 99, not in 'images'",
        f"image 2: {png(2)}: panoptic PNG is missing",
        f"image 3: {png(3)}: panoptic PNG has mode L, expected RGB (id = R + 256G + 256²B)",
        f"{png(4)}: image 4: panoptic PNG is 21x30 (HxW) but its image '4.png' is 20x30",
        f"image 5: {files.image(5)}: image file is missing",
        f"{png(7)}: image 7 segment 5: listed in segments_info but has no pixel in the PNG",
    ]
    assert report.warnings == [
        f"{ann}: category 4 ('grass') has no 'isthing' — {FIX_ISTHING}",
        f"{ann}: image 6 ('6.png') — {FIX_NO_ANNOTATION}",
        f"{png(7)}: image 7 segment {ID_A}: bbox [0, 0, 12, 20] is 2 px from the mask's tight box [0, 0, 10, 20]"
        f" — {FIX_BBOX}",
        f"{png(7)}: image 7 segment {ID_B}: area 150 but 200 pixel(s) — {FIX_AREA}",
        f"{png(7)}: image 7: segment id(s) [77] not in segments_info — {FIX_VOID}",
    ]
    assert report.fixups == {FIX_ISTHING: 1, FIX_NO_ANNOTATION: 1, FIX_BBOX: 1, FIX_AREA: 1, FIX_VOID: 1,
                             FIX_CROWD: 5}
    # the clean segments of images 1, 4 (its PNG is checked in its own frame), 5, 7 and 8 are counted
    assert report.num_images == 8 and report.num_annotations == 3 * 7 + 1 + 4
    assert report.boxes_per_class == {"cat": 5, "grass": 5}


def test_loader_refuses_what_the_check_calls_an_error(tmp_path):
    """Each image the check flags is refused by CocoPanoptic; the clean and warning-only ones load."""
    files = write_panoptic(tmp_path, 8)
    _plant_every_problem(files)
    files.edit(lambda data: data["annotations"].pop())  # image 99's and image 8's JSON problems: load first
    files.set_segments(8, good_segments())
    ds = CocoPanoptic(files.images, files.ann, files.pngs)
    refused = {2: files.png(2), 3: files.png(3), 4: files.png(4), 5: files.image(5), 7: files.png(7)}
    for index, image_id in enumerate(ds.ids):
        if image_id in refused:
            with pytest.raises(DatasetError, match=re.escape(str(refused[image_id]))):
                ds[index]
        else:
            assert len(ds[index][1]["labels"]) == (0 if image_id == 6 else 2)


def test_num_classes_and_duplicates(tmp_path):
    files = write_panoptic(tmp_path, 2)

    def change(data: dict[str, Any]) -> None:
        data["images"][1]["id"] = 1
        data["annotations"][1]["image_id"] = 1
    files.edit(change)
    report = files.check(num_classes=4)
    ann = files.ann
    assert report.errors == [
        f"{ann}: duplicate image id 1: images[0] (file_name '1.png') and images[1] (file_name '2.png')",
        f"{ann}: dataset category ids [4] do not fit num_classes=4: DETR needs num_classes = max category id + 1 = 5 "
        "(ids must be 0..3)",
        f"{ann}: image 1: two annotations ('1.png' and '2.png')",
    ]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.pop("annotations"), "not a COCO panoptic file (no 'annotations' list)"),
    (lambda d: d["categories"].append({"name": "x"}), "a category lacks an integer 'id'"),
    (lambda d: d.update(images={}), "not a COCO annotation file (no 'images' list)"),
    (lambda d: d["images"].append({"id": 3}), "images[1] (id 3): 'file_name' is None, not a string"),
], ids=["no-annotations", "category-without-id", "images-not-a-list", "image-without-file-name"])
def test_file_level_refusal_is_the_only_error(tmp_path, change, expected):
    files = write_panoptic(tmp_path, 1)
    files.edit(change)
    report = files.check()
    assert report.errors == [f"{files.ann}: {expected}"] and report.num_images == 0


def test_unreadable_json_and_png_outside(tmp_path):
    files = write_panoptic(tmp_path, 1)
    files.edit(lambda d: d["annotations"][0].update(file_name="../1.png"))
    report = files.check()
    assert len(report.errors) == 1 and report.errors[0].startswith(
        f"{files.ann}: image 1: file_name '../1.png' climbs out through '..', outside the images folder {files.pngs}")
    report = files.check(allow_outside_images=True)
    assert report.errors == [f"image 1: {files.pngs / '../1.png'}: panoptic PNG is missing"]
    files.ann.write_text('{"images": [')
    report = files.check()
    assert len(report.errors) == 1 and report.errors[0].startswith(f"{files.ann}: annotation file is not readable JSON")
