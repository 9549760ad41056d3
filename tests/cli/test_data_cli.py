"""``detrtool data ...`` in-process with click's CliRunner, and the reusable ``dataset_options``."""

from __future__ import annotations

import json

import click
from click.testing import CliRunner

from cli.main import cli
from cli.options import dataset_options, dataset_source_from_options, pop_dataset_options
from detr_core.data import DatasetSource
from tests.data import write_coco, write_voc


def invoke(*args):
    return CliRunner().invoke(cli, ["data", *map(str, args)], catch_exceptions=False)


def test_shapes_command(tmp_path):
    out = tmp_path / "shapes"
    result = invoke("shapes", "--out", out, "--seed", 2, "--train-count", 4, "--val-count", 2,
                    "--image-size", 48, "--classes", "circle,star", "--max-objects", 2)
    assert result.exit_code == 0, result.output
    assert "wrote 4 train + 2 val images (2 classes, ids 0..1)" in result.output
    data = json.loads((out / "annotations" / "instances_val2017.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["circle", "star"]
    assert len(list((out / "train2017").glob("*.png"))) == 4


def test_shapes_bad_class(tmp_path):
    result = invoke("shapes", "--out", tmp_path / "x", "--classes", "blob")
    assert result.exit_code == 2 and "unknown or no classes ['blob']" in result.output


def test_voc2coco_command(tmp_path):
    root = write_voc(tmp_path)
    out = tmp_path / "val.json"
    result = invoke("voc2coco", root, "--split", "trainval", "--out", out, "--category-offset", 1)
    assert result.exit_code == 0, result.output
    assert f"wrote 3 images, 5 boxes to {out}" in result.output
    data = json.loads(out.read_text())
    assert data["categories"][0] == {"id": 1, "name": "aeroplane", "supercategory": "voc"}


def test_voc2coco_missing_split(tmp_path):
    result = invoke("voc2coco", write_voc(tmp_path), "--split", "test", "--out", tmp_path / "t.json")
    assert result.exit_code == 1 and "test.txt: split file is missing" in result.output


def test_check_coco_ok_and_errors(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}]
    anns = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    images_dir, path = write_coco(tmp_path, images, anns)
    result = invoke("check", path, "--images", images_dir)
    assert result.exit_code == 0 and "images: 1" in result.output and "  dog: 1" in result.output
    result = invoke("check", path, "--images", images_dir, "--num-classes", 2)
    assert result.exit_code == 1
    assert "ERROR annotation 1 (image 1): category_id 2 does not fit num_classes=2" in result.output
    result = invoke("check", path)
    assert result.exit_code == 2 and "needs --images DIR" in result.output


def test_check_voc_command(tmp_path):
    root = write_voc(tmp_path)
    result = invoke("check", root)
    assert result.exit_code == 0 and "images: 3" in result.output and "0 error(s)" in result.output


def test_dataset_options_decorator(tmp_path):
    seen = {}

    @click.command()
    @dataset_options
    def cmd(**kwargs):
        seen.update(kwargs)

    runner = CliRunner()
    assert runner.invoke(cmd, []).exit_code == 0
    assert dataset_source_from_options(seen) == DatasetSource() and DatasetSource().is_default
    result = runner.invoke(cmd, ["--coco-path", str(tmp_path), "--pad-to", "64x96", "--remove-difficult"])
    assert result.exit_code == 0, result.output
    kwargs = dict(seen)
    source, pad_to = pop_dataset_options(kwargs)
    assert source == DatasetSource(coco_path=str(tmp_path), remove_difficult=True) and pad_to == (64, 96)
    assert kwargs == {}
    result = runner.invoke(cmd, ["--pad-to", "64by96"])
    assert result.exit_code == 2 and "expected HEIGHTxWIDTH such as 800x1333" in result.output
