"""YOLO datasets: the reader, ``data yolo2coco`` (boxes within 0.5 px of the originals) and ``data check``
(every planted problem reported in one line)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from detr_core.data.check import check_yolo
from detr_core.data.coco import DatasetError
from detr_core.data.yolo import YoloDetection, label_path_of, read_data_yaml, yolo_to_coco
from tests.data.handmade import YOLO_IMAGES, YOLO_NAMES, write_yolo


def _original_boxes(split: str) -> list[tuple[int, list[float]]]:
    """(class, [x, y, w, h] pixels) of the hand-made labels, computed here from the normalised values."""
    out = []
    for s, _, (h, w), text in YOLO_IMAGES:
        if s != split or not text:
            continue
        for line in text.splitlines():
            c, cx, cy, bw, bh = (float(v) for v in line.split())
            out.append((int(c), [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]))
    return out


@pytest.mark.parametrize("split", ["train", "val"])
def test_yolo2coco_boxes_within_half_a_pixel(tmp_path, split):
    root = write_yolo(tmp_path / "yolo")
    out = tmp_path / f"{split}.json"
    result = CliRunner().invoke(cli, ["data", "yolo2coco", str(root), "--split", split, "--out", str(out)])
    assert result.exit_code == 0, result.output
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == list(YOLO_NAMES)
    got = [(a["category_id"], a["bbox"]) for a in coco["annotations"]]
    want = _original_boxes(split)
    assert len(got) == len(want)
    for (gc, gb), (wc, wb) in zip(got, want, strict=True):
        assert gc == wc and max(abs(a - b) for a, b in zip(gb, wb, strict=True)) < 0.5
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in coco["images"]}
    assert sizes == {f"{stem}.png": hw for s, stem, hw, _ in YOLO_IMAGES if s == split}
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temp left


def test_reader_targets_match_the_labels(tmp_path):
    ds = YoloDetection(write_yolo(tmp_path), split="val")
    assert len(ds) == 2 and ds.num_classes == 3 and ds.class_names == list(YOLO_NAMES)
    image, target = ds[0]
    assert image.shape == (3, 60, 80) and target["image_id"].item() == 1
    assert target["labels"].tolist() == [0, 2]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([0.4, 0.5, 0.3, 0.6]))


def test_names_as_a_mapping_and_label_paths(tmp_path):
    root = write_yolo(tmp_path, names="{0: cat, 2: bird}", images=YOLO_IMAGES[3:4])
    layout = read_data_yaml(root)
    assert layout.names == ("cat", "N/A", "bird")
    assert label_path_of(root / "images" / "val" / "v1.png") == root / "labels" / "val" / "v1.txt"


PLANTED = (
    ("val", "missing", (40, 40), None),                          # no label file
    ("val", "empty", (40, 40), ""),                              # empty label file
    ("val", "outclass", (40, 40), "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n"),  # class 7 of 3
    ("val", "outcoord", (40, 40), "1 0.9 0.5 0.5 0.2\n"),        # x2 = 1.15: clipped
    ("val", "malformed", (40, 40), "1 0.5 0.5 0.2\n"),           # 4 fields
    ("val", "nonnumber", (40, 40), "2 0.5 abc 0.2 0.2\n"),       # not a number
    ("val", "flat", (40, 40), "0 0.5 0.5 0.0 0.3\n"),            # zero width: dropped
)


def test_data_check_reports_every_planted_problem_in_one_line(tmp_path):
    root = write_yolo(tmp_path, images=YOLO_IMAGES + PLANTED)
    result = CliRunner().invoke(cli, ["data", "check", str(root)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    expected = {
        "missing": ("WARNING", "image without a label file read as having no objects"),
        "empty": ("WARNING", "empty label file read as an image with no objects"),
        "outclass": ("ERROR", "line 2: class 7 is out of range"),
        "outcoord": ("WARNING", "out-of-bounds box clipped"),
        "malformed": ("ERROR", "line 1: '1 0.5 0.5 0.2' is not 'class cx cy w h'"),
        "nonnumber": ("ERROR", "holds a non-number"),
        "flat": ("WARNING", "zero-size or negative box dropped"),
    }
    for stem, (kind, text) in expected.items():
        hits = [line for line in lines if f"{stem}.txt" in line and line.startswith(kind)]
        assert len(hits) == 1 and text in hits[0], (stem, hits)
    assert "3 error(s), 4 warning(s)" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error:") and "3 error(s)" in lines[-1]
    report = check_yolo(root)
    assert report.num_images == 12 and report.boxes_per_class["cat"] == 4  # outclass's class-0 line still counted


def test_loader_refuses_the_first_bad_line_in_one_line(tmp_path):
    root = write_yolo(tmp_path, images=YOLO_IMAGES[:1] + PLANTED[2:3])
    (root / "images" / "val").mkdir(parents=True, exist_ok=True)
    with pytest.raises(DatasetError, match=r"outclass\.txt: line 2: class 7 is out of range \(data.yaml names 3"):
        YoloDetection(root, split="val")
    with pytest.raises(DatasetError, match="class 7 is out of range"):
        yolo_to_coco(root, "val")
