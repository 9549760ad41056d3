"""Bad-input matrix of class maps and YOLO sets: each refusal is one ``Error:`` line naming the file / option
and the problem, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.bad_input import check_bad_input
from tests.data import write_voc
from tests.data.handmade import YOLO_IMAGES, coco91_checkpoint, write_yolo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_classmap")
    maps = {
        "not_json.json": "{cat: 1",
        "array.json": "[1, 2]",
        "dup_key.json": '{"1": "person", "1": "dog"}',
        "unknown_model.json": json.dumps({"unicorn": "dog"}),
        "unknown_data.json": json.dumps({"person": "unicorn"}),
        "model_range.json": json.dumps({"200": 0}),
        "data_range.json": json.dumps({"1": 99}),
        "dup_target.json": json.dumps({"1": "person", "3": "person"}),
        "bad_value.json": json.dumps({"1": [1]}),
    }
    for name, text in maps.items():
        (root / name).write_text(text)
    bad_yaml = root / "bad_yaml"
    bad_yaml.mkdir()
    (bad_yaml / "data.yaml").write_text("names: [a, b\nval: images/val\n")
    bad_names = write_yolo(root / "bad_names", images=YOLO_IMAGES[3:])
    (bad_names / "data.yaml").write_text("val: images/val\nnames: 7\n")
    no_val = write_yolo(root / "no_val", images=YOLO_IMAGES[3:])
    (no_val / "data.yaml").write_text("train: images/train\nnames: [cat, dog, bird]\n")
    malformed = write_yolo(root / "malformed", images=(("val", "m1", (40, 40), "0 0.5 0.5\n"),))
    return {"root": root, "voc": write_voc(root), "ckpt": coco91_checkpoint(root / "c91.pth"), "bad_yaml": bad_yaml,
            "bad_names": bad_names, "no_val": no_val, "malformed": malformed, "empty": root / "empty"}


MAP_ROWS = [
    ("missing", "nope.json", ["--class-map nope.json", "neither a built-in map"]),
    ("not_json", "not_json.json", ["not_json.json", "not JSON"]),
    ("array", "array.json", ["array.json", "non-empty JSON object"]),
    ("dup_key", "dup_key.json", ["dup_key.json", "duplicate key '1'"]),
    ("unknown_model", "unknown_model.json", ["unknown_model.json", "unknown model class name 'unicorn'"]),
    ("unknown_data", "unknown_data.json", ["unknown_data.json", "unknown dataset category name 'unicorn'"]),
    ("model_range", "model_range.json", ["model_range.json", "model class id 200 is out of range"]),
    ("data_range", "data_range.json", ["data_range.json", "dataset category id 99 is out of range"]),
    ("dup_target", "dup_target.json", ["dup_target.json", "duplicate dataset category 14"]),
    ("bad_value", "bad_value.json", ["bad_value.json", "neither a class id nor a class name"]),
]


@pytest.mark.parametrize("name,file,names", MAP_ROWS, ids=[r[0] for r in MAP_ROWS])
def test_eval_class_map(world, tmp_path, name, file, names):
    spec = file if name == "missing" else str(world["root"] / file)
    out = tmp_path / "eval"
    check_bad_input(["eval", "--resume", world["ckpt"], "--voc-root", world["voc"], "--nheads", "4", "--eval-size", "64",
                     "--class-map", spec, "--output-dir", out, "--no-progress"], names=names, protect=[out])
    assert not (out / "metrics.json").exists()


def test_predict_class_map_unknown_name(world, tmp_path):
    check_bad_input(["predict", world["voc"], "--resume", world["ckpt"], "--nheads", "4", "--class-map",
                     world["root"] / "unknown_model.json", "--output-dir", tmp_path],
                    names=["unknown_model.json", "unicorn"])


def test_train_init_class_map_unknown_dataset_name(world, tmp_path):
    check_bad_input(["train", "--init", world["ckpt"], "--voc-root", world["voc"], "--class-map",
                     world["root"] / "unknown_data.json", "--nheads", "4", "--epochs", "1", "--output-dir", tmp_path,
                     "--no-progress"], names=["unknown_data.json", "unknown dataset category name 'unicorn'"])


YOLO_ROWS = [
    ("no_data_yaml", "empty", ["empty", "no data.yaml"]),
    ("not_yaml", "bad_yaml", ["data.yaml", "not a readable YAML file"]),
    ("names_type", "bad_names", ["data.yaml", "'names' must be a non-empty list"]),
    ("no_val_split", "no_val", ["data.yaml", "no 'val' entry"]),
    ("malformed_line", "malformed", ["m1.txt", "line 1", "is not 'class cx cy w h'"]),
]


@pytest.mark.parametrize("name,folder,names", YOLO_ROWS, ids=[r[0] for r in YOLO_ROWS])
def test_yolo2coco_and_eval(world, tmp_path, name, folder, names):
    root = world[folder]
    root.mkdir(exist_ok=True)
    out = tmp_path / "val.json"
    check_bad_input(["data", "yolo2coco", root, "--out", out], names=names, protect=[out])
    assert not out.exists()
    check_bad_input(["eval", "--resume", world["ckpt"], "--yolo-root", root, "--nheads", "4",
                     "--output-dir", tmp_path / "eval", "--no-progress"], names=names)
