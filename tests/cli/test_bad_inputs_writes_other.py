"""The write rule for the other commands: a link at a path they write is refused before any work (its
target byte-identical) and no command writes over one of its own inputs (``eval``'s annotation file,
``convert``'s source, ``data yolo2coco``'s dataset)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from detr_core.data.shapes import ShapesParams, generate_shapes
from tests.cli.bad_input import check_bad_input, run_cli, tree_digest
from tests.data.handmade import write_yolo

LINK_LINE = "is a symbolic link: detrtool does not write through links"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_text("someone else's file\n")
    return path


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "data",
                           ShapesParams(train_count=2, val_count=2, image_size=64), progress=False)


def _eval(ckpt: Path, root: Path, out: Path, ann: Path | None = None) -> list[object]:
    ann = ann or root / "annotations" / "instances_val2017.json"
    return ["eval", "--resume", ckpt, "--nheads", 4, "--val-images", root / "val2017", "--val-ann", ann,
            "--output-dir", out, "--no-progress"]


@pytest.mark.parametrize("name", ["detections.json", "metrics.json"])
def test_eval_refuses_a_link_at_an_output(tiny_checkpoint_path, shapes_root, tmp_path, victim, name):
    out = tmp_path / "eval"
    out.mkdir()
    (out / name).symlink_to(victim)
    check_bad_input(_eval(tiny_checkpoint_path, shapes_root, out), names=["--output-dir", str(out / name), LINK_LINE],
                    protect=[victim.parent])


def test_eval_never_writes_over_its_annotation_file(tiny_checkpoint_path, shapes_root, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    ann = shutil.copy(shapes_root / "annotations" / "instances_val2017.json", out / "detections.json")
    check_bad_input(_eval(tiny_checkpoint_path, shapes_root, out, Path(ann)),
                    names=["--output-dir", str(out / "detections.json"), "an input"], protect=[out])


def test_export_refuses_a_link_at_the_artifact_or_its_companion(tiny_checkpoint_path, tmp_path, victim):
    (tmp_path / "model.onnx").symlink_to(victim)
    (tmp_path / "ir.bin").symlink_to(victim)
    for output, link in ((tmp_path / "model.onnx", tmp_path / "model.onnx"), (tmp_path / "ir.xml", tmp_path / "ir.bin")):
        fmt = "onnx" if output.suffix == ".onnx" else "openvino"
        check_bad_input(["export", "--resume", tiny_checkpoint_path, "--nheads", 4, "--format", fmt, "--output", output,
                         "--input-size", "64x64", "--no-validate"], names=[str(link), LINK_LINE], protect=[victim.parent])
    assert not (tmp_path / "ir.xml").exists()


def test_plot_refuses_a_link_at_a_picture(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps({"epoch": e, "train_loss": 1.0 / (e + 1), "test_AP": 0.1 * e,
                                                       "train_minutes": e}) + "\n" for e in range(3)))
    (run / "ap.png").symlink_to(victim)
    check_bad_input(["plot", run], names=[str(run / "ap.png"), LINK_LINE], protect=[victim.parent])
    assert not (run / "loss.png").exists()  # refused before the first picture


def test_data_shapes_refuses_a_link_at_a_folder_it_replaces(tmp_path):
    out = tmp_path / "shapes"
    out.mkdir()
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    (out / "annotations").symlink_to(other, target_is_directory=True)
    check_bad_input(["data", "shapes", "--out", out, "--train-count", 1, "--val-count", 1, "--image-size", 32],
                    names=[str(out / "annotations"), LINK_LINE], protect=[other])
    assert sorted(p.name for p in out.iterdir()) == ["annotations"]  # nothing swapped in, no staging folder


def test_yolo2coco_never_writes_over_its_dataset(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    check_bad_input(["data", "yolo2coco", root, "--out", root / "data.yaml"],
                    names=["--out", str(root / "data.yaml"), "file of the dataset"], exit_code=2, protect=[root])


@pytest.mark.parametrize("to", ["official", "safetensors", "hf"])
def test_convert_never_writes_over_its_source(tiny_checkpoint_path, tmp_path, to):
    hf = tmp_path / "hf"
    assert run_cli(["convert", tiny_checkpoint_path, "--to", "hf", "--output", hf, "--nheads", 4]).exit_code == 0
    output = {"official": hf / "config.json", "safetensors": hf / "model.safetensors", "hf": hf}[to]
    if to == "official":
        output = shutil.copy(tiny_checkpoint_path, tmp_path / "same.pth")
        source = Path(output)
    else:
        source = hf
    before = tree_digest(hf)
    check_bad_input(["convert", source, "--to", to, "--output", output, "--nheads", 4],
                    names=["--output", "convert does not write over its input"], exit_code=2,
                    protect=[hf, Path(output)])
    assert tree_digest(hf) == before
