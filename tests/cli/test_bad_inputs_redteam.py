"""The red team's second round, as bad-input rows: nan/inf in float options, files that are not regular
files, image sizes that disagree with the annotation, unscorable or unreadable annotation files, YAML that
repeats a key or uses aliases, a dataset that must not be left mixed, and Ctrl-C during start-up.

Each row goes through :func:`tests.cli.bad_input.check_bad_input`: one ``Error:`` line naming the
option / file / entry, no traceback, earlier outputs byte for byte as they were.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import detr_core.data.shapes as shapes_module
from detr_core.data.shapes import ShapesParams, generate_shapes
from tests.cli.bad_input import check_bad_input, fill, run_cli, tmpfs, tree_digest
from tests.cli.test_bad_inputs_data import _eval_args, _write, coco_root, dataset, previous  # noqa: F401
from tests.data import write_voc

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def specials(tmp_path) -> dict[str, Path]:
    """A fifo and a symlink to /dev/zero, each with a plausible suffix."""
    out = {}
    for suffix in (".onnx", ".pth", ".yaml", ".json", ".png"):
        fifo = tmp_path / f"fifo{suffix}"
        os.mkfifo(fifo)
        zero = tmp_path / f"zero{suffix}"
        zero.symlink_to("/dev/zero")
        out[f"fifo{suffix}"], out[f"zero{suffix}"] = fifo, zero
    return out


@pytest.fixture
def kept(tmp_path) -> Path:
    """An earlier output folder a refused command must leave as it was."""
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    return out


# --- 1. nan / inf never pass a float option (click usage errors: exit 2) ---------------------------------
FLOAT_ROWS = [
    ("bench --tolerance nan", ["bench", "--tolerance", "nan"], ["--tolerance", "finite"]),
    ("bench --max-map-drop inf", ["bench", "--max-map-drop", "inf"], ["--max-map-drop", "finite"]),
    ("bench --max-map-drop nan", ["bench", "--max-map-drop", "nan"], ["--max-map-drop", "finite"]),
    ("demo --tolerance nan", ["demo", "--tolerance", "nan"], ["--tolerance", "finite"]),
    ("predict --threshold nan", ["predict", "x.png", "--model", "m.onnx", "--threshold", "nan"],
     ["--threshold", "finite"]),
    ("predict --threshold -inf", ["predict", "x.png", "--model", "m.onnx", "--threshold", "-inf"],
     ["--threshold", "-inf"]),
    ("train --lr inf", ["train", "--lr", "inf"], ["--lr", "finite"]),
]


@pytest.mark.parametrize("args, names", [r[1:] for r in FLOAT_ROWS], ids=[r[0] for r in FLOAT_ROWS])
def test_nan_and_inf_are_refused(tmp_path, kept, args, names):
    (tmp_path / "m.onnx").write_bytes(b"x")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        check_bad_input([*args, "--output-dir", kept], names=names, exit_code=2, protect=[kept])
    finally:
        os.chdir(cwd)


# --- 5. a fifo or a /dev/zero symlink as an input file: "not a regular file" ---------------------------
def _special_rows(s: dict[str, Path], kept: Path, ckpt: Path) -> list[tuple[list[Any], str]]:
    return [
        (["predict", "a.png", "--model", s["fifo.onnx"], "--output-dir", kept], "--model"),
        (["predict", "a.png", "--model", s["zero.onnx"], "--output-dir", kept], "--model"),
        (["predict", "a.png", "--resume", s["zero.pth"], "--output-dir", kept], "--resume"),
        (["eval", "--resume", s["fifo.pth"], "--output-dir", kept], "--resume"),
        (["eval", "--resume", ckpt, "--val-ann", s["zero.json"], "--val-images", kept, "--output-dir", kept],
         "--val-ann"),
        (["train", "--config", s["fifo.yaml"], "--output-dir", kept], "--config"),
        (["train", "--resume", s["zero.pth"], "--output-dir", kept], "--resume"),
        (["export", "--resume", s["fifo.pth"], "--format", "onnx"], "--resume"),
        (["bench", "--resume", s["zero.pth"], "--output-dir", kept], "--resume"),
        (["convert", s["fifo.pth"], "--to", "hf", "--output", kept / "hf"], "SOURCE"),
        (["data", "check", s["zero.json"], "--images", kept], "SOURCE"),
    ]


@pytest.mark.parametrize("row", range(11))
def test_a_special_file_is_not_a_regular_file(specials, kept, tiny_checkpoint_path, row):
    args, option = _special_rows(specials, kept, tiny_checkpoint_path)[row]
    special = next(a for a in args if isinstance(a, Path) and a.name.startswith(("fifo", "zero")))
    check_bad_input(args, names=[option, str(special), "not a regular file"], exit_code=2, protect=[kept])


def test_predict_lists_special_files_in_a_folder(coco_root, specials, tmp_path, tiny_checkpoint_path):  # noqa: F811
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes((coco_root / "val2017" / "0001.png").read_bytes())
    (folder / "z.png").symlink_to("/dev/zero")
    os.mkfifo(folder / "f.png")
    out = tmp_path / "pred"
    result = check_bad_input(["predict", folder, specials["fifo.png"], "--output-dir", out, "--resume",
                              tiny_checkpoint_path, "--nheads", "4"],
                             names=["3 input(s) skipped", "not a regular file"])
    for path in (folder / "f.png", folder / "z.png", specials["fifo.png"]):
        assert f"  {path}: not a regular file" in result.output
    assert (out / "good.png").is_file() and not (out / "z.png").exists()


# --- 2. COCO sizes, empty ground truth; 5. deep JSON, int64 ids, iscrowd -------------------------------
def _wh(data: dict) -> None:
    data["images"][0].update(width=640, height=480)


def _huge_id(data: dict) -> None:
    old = data["images"][0]["id"]
    data["images"][0]["id"] = 10**30
    for ann in data["annotations"]:
        if ann["image_id"] == old:
            ann["image_id"] = 10**30


COCO_ROWS = [
    ("size disagrees with the file", _wh, ["image 1", "480x640", "0001.png"], ["480x640", "0001.png"]),
    ("no annotations", lambda d: d.update(annotations=[]), ["no annotations to score in"], None),
    ("only crowd annotations", lambda d: [a.update(iscrowd=1) for a in d["annotations"]],
     ["no annotations to score in", "crowd"], None),
    ("id beyond int64", _huge_id, ["images[0]", "'id'", "beyond int64"], ["images[0]", "beyond int64"]),
    ("iscrowd yes", lambda d: d["annotations"][0].update(iscrowd="yes"),
     ["annotations[0]", "'iscrowd'", "'yes'", "not 0 or 1"], ["annotations[0]", "'iscrowd'", "not 0 or 1"]),
    ("iscrowd 2", lambda d: d["annotations"][0].update(iscrowd=2), ["annotations[0]", "'iscrowd'", "not 0 or 1"],
     ["annotations[0]", "'iscrowd'", "not 0 or 1"]),
]


@pytest.mark.parametrize("mutate, eval_names", [(r[1], r[2]) for r in COCO_ROWS], ids=[r[0] for r in COCO_ROWS])
def test_eval_refuses(dataset, tmp_path, previous, tiny_checkpoint_path, mutate, eval_names):  # noqa: F811
    images, data = dataset
    mutate(data)
    ann = _write(tmp_path, data)
    check_bad_input(_eval_args(ann, images, previous, tiny_checkpoint_path), names=[str(ann), *eval_names],
                    protect=[previous, ann])


@pytest.mark.parametrize("mutate, check_names", [(r[1], r[3]) for r in COCO_ROWS if r[3]],
                         ids=[r[0] for r in COCO_ROWS if r[3]])
def test_data_check_reports(dataset, tmp_path, mutate, check_names):  # noqa: F811
    images, data = dataset
    mutate(data)
    ann = _write(tmp_path, data)
    check_bad_input(["data", "check", ann, "--images", images], names=[str(ann), *check_names])


@pytest.mark.parametrize("command", ["check", "eval"])
def test_json_nested_too_deeply(dataset, tmp_path, previous, tiny_checkpoint_path, command):  # noqa: F811
    ann = _write(tmp_path, "[" * 100_000 + "]" * 100_000)
    args = (["data", "check", ann, "--images", dataset[0]] if command == "check"
            else _eval_args(ann, dataset[0], previous, tiny_checkpoint_path))
    check_bad_input(args, names=[str(ann), "not a readable JSON file (nested too deeply)"], protect=[previous])


def test_train_refuses_an_image_of_another_size(dataset, tmp_path):  # noqa: F811
    images, data = dataset
    _wh(data)
    ann = _write(tmp_path, data)
    out = tmp_path / "run"
    check_bad_input(["train", "--train-images", images, "--train-ann", ann, "--val-images", images, "--val-ann", ann,
                     "--output-dir", out, "--epochs", "1", "--backbone", "small_cnn", "--hidden-dim", "32",
                     "--nheads", "2", "--enc-layers", "1", "--dec-layers", "1", "--dim-feedforward", "64",
                     "--num-queries", "5", "--transforms", "shapes", "--image-size", "64", "--batch-size", "5",
                     "--no-progress"], names=[str(ann), "image 1", "480x640", "0001.png"])


# --- 2. VOC: <size> against the image, <difficult> ----------------------------------------------------
def _voc_with(tmp_path: Path, old: str, new: str) -> tuple[Path, Path]:
    root = write_voc(tmp_path / "voc")
    xml = root / "VOC2007" / "Annotations" / "000005.xml"
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new, 1))
    return root, xml


def test_voc2coco_refuses_a_size_the_image_does_not_have(tmp_path, kept):
    root, xml = _voc_with(tmp_path, "<height>50</height>", "<height>480</height>")
    out = kept / "metrics.json"
    check_bad_input(["data", "voc2coco", root, "--split", "trainval", "--out", out],
                    names=[str(xml), "<size>", "480x80", "000005.jpg", "50x80"], protect=[kept])


def test_voc_loader_refuses_a_size_the_image_does_not_have(tmp_path):
    from detr_core.data import DatasetError, VocDetection

    root, xml = _voc_with(tmp_path, "<width>80</width>", "<width>640</width>")
    voc_set = VocDetection(root, split="trainval")
    index = voc_set.stems.index("000005")
    with pytest.raises(DatasetError, match=r"000005\.xml: <size> says 50x640 \(HxW\) but .*000005\.jpg is 50x80"):
        voc_set[index]


def test_voc2coco_fills_a_missing_size_from_the_header(tmp_path):
    root, _ = _voc_with(tmp_path, "<size><width>80</width><height>50</height><depth>3</depth></size>", "")
    result = run_cli(["data", "voc2coco", root, "--split", "trainval", "--out", tmp_path / "o.json"])
    assert result.exit_code == 0, result.output
    coco = json.loads((tmp_path / "o.json").read_text())
    assert [(i["height"], i["width"]) for i in coco["images"] if i["file_name"] == "000005.jpg"] == [(50, 80)]


def test_voc_difficult_other_than_0_or_1(tmp_path, kept):
    root, xml = _voc_with(tmp_path, "<difficult>0</difficult>", "<difficult>maybe</difficult>")
    check_bad_input(["data", "voc2coco", root, "--split", "trainval", "--out", kept / "metrics.json"],
                    names=[str(xml), "object 0", "<difficult>", "'maybe'", "not 0 or 1"], protect=[kept])


# --- 2. / 5. YAML: repeated keys, anchors and aliases, unknown keys of a section -----------------------
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)) + "lr: *a8\n"
YAML_ROWS = [
    ("key twice", "epochs: 1\nlr: 0.1\nepochs: 5\n", ["line 3", "'epochs'", "twice", "first on line 1"]),
    ("key twice in a section", "model:\n  nheads: 2\n  nheads: 4\n", ["line 3", "'nheads'", "twice"]),
    ("alias bomb", BOMB, ["line 1", "anchor &a0", "refused"]),
    ("merge key", "base: &b {lr: 0.1}\nmodel:\n  <<: *b\n", ["anchor &b", "refused"]),
    ("unknown key of model", "model:\n  hidden_dimm: 16\n", ["section 'model'", "unknown keys", "hidden_dimm"]),
    ("unknown key of loss", "loss:\n  eos: 0.1\n", ["section 'loss'", "unknown keys", "'eos'"]),
]


@pytest.mark.parametrize("text, names", [r[1:] for r in YAML_ROWS], ids=[r[0] for r in YAML_ROWS])
def test_train_config_yaml(tmp_path, text, names):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pth").write_bytes(b"earlier")
    check_bad_input(["train", "--config", config, "--output-dir", out], names=[str(config), *names], protect=[out])


def test_yolo_data_yaml_with_a_key_twice(tmp_path):
    from tests.data.handmade import write_yolo

    root = write_yolo(tmp_path / "yolo")
    text = (root / "data.yaml").read_text()
    (root / "data.yaml").write_text(text + "nc: 1\nnc: 2\n")
    check_bad_input(["data", "check", root], names=[str(root / "data.yaml"), "'nc'", "twice"])


# --- 3. data shapes over an existing dataset: never mixed or partial ---------------------------------
TINY = ShapesParams(seed=0, image_size=32, train_count=6, val_count=3, classes=("circle", "square"), max_objects=2)
SHAPES_ARGS = ["--image-size", "32", "--classes", "circle,square", "--max-objects", "2"]


def test_shapes_failing_midway_leaves_the_old_dataset(tmp_path, monkeypatch):
    out = generate_shapes(tmp_path / "ds", TINY, progress=False)
    (out / "notes.txt").write_text("mine")
    real = shapes_module._write_split

    def fail_on_val(root, params, split, *, progress):
        if split == "val":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(root, params, split, progress=progress)

    monkeypatch.setattr(shapes_module, "_write_split", fail_on_val)
    check_bad_input(["data", "shapes", "--out", out, "--seed", "1", "--train-count", "9", "--val-count", "3",
                     *SHAPES_ARGS], names=["cannot write", "no space left on device"], protect=[out])
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "notes.txt", "train2017", "val2017"]


def test_shapes_over_an_existing_dataset_replaces_it_whole(tmp_path):
    out = generate_shapes(tmp_path / "ds", TINY, progress=False)
    (out / "notes.txt").write_text("mine")
    result = run_cli(["data", "shapes", "--out", out, "--seed", "1", "--train-count", "2", "--val-count", "1",
                      *SHAPES_ARGS])
    assert result.exit_code == 0, result.output
    assert len(list((out / "train2017").iterdir())) == 2 and len(list((out / "val2017").iterdir())) == 1
    fresh = generate_shapes(tmp_path / "fresh", ShapesParams(**{**vars(TINY), "seed": 1, "train_count": 2,
                                                                "val_count": 1}), progress=False)
    new = {Path(k).relative_to(out): v for k, v in tree_digest(out).items()}
    assert new.pop(Path("notes.txt")) and new == {Path(k).relative_to(fresh): v for k, v in tree_digest(fresh).items()}


def test_shapes_on_a_full_disk_leaves_the_old_dataset(tmp_path):
    with tmpfs(tmp_path / "disk", size="512k") as disk:
        out = disk / "ds"
        assert run_cli(["data", "shapes", "--out", out, "--train-count", "6", "--val-count", "3",
                        *SHAPES_ARGS]).exit_code == 0
        fill(disk)
        check_bad_input(["data", "shapes", "--out", out, "--seed", "1", "--train-count", "6", "--val-count", "3",
                         *SHAPES_ARGS], names=["cannot write", "no space left on device"], protect=[out])
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_shapes_on_a_full_empty_disk_leaves_nothing(tmp_path):
    with tmpfs(tmp_path / "disk", size="256k") as disk:
        check_bad_input(["data", "shapes", "--out", disk / "ds", "--train-count", "60", "--val-count", "20",
                         "--image-size", "128"], names=["cannot write", "no space left on device"])
        assert list(disk.iterdir()) == []


# --- 4. Ctrl-C while the CLI is being imported ---------------------------------------------------------
INTERRUPT_DURING_IMPORT = """
import os, signal, sys

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "click":  # imported while the CLI loads (torch no longer is): a real SIGINT to this process
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv = ["detrtool", "--help"]
from cli.entry import main
main()
"""


def test_ctrl_c_during_start_up_is_one_line():
    done = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_IMPORT], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[2])
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "Aborted!" and "Traceback" not in done.stderr + done.stdout


def test_the_console_script_is_the_guarded_entry():
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["detrtool"] == "cli.entry:main"
    done = subprocess.run([sys.executable, "-m", "cli.main", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[2])
    assert done.returncode == 0 and "version" in done.stdout
