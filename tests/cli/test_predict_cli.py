"""``detrtool predict`` in-process: pictures, summaries, JSON, attention grids and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.exporters.predict.images import BAD_FILES, ODD_SIZES, shapes_val_images, write_odd_images


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-inputs")
    return shapes_val_images(root / "shapes", count=2), write_odd_images(root / "odd")


def invoke(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)], catch_exceptions=False)


def _pixels(path):
    with PIL.Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def test_pictures_summaries_json_and_attention(inputs, tiny_checkpoint_path, tmp_path):
    shapes, _ = inputs
    # The tiny reference checkpoint has random weights (every score ~0.18): a low threshold draws boxes.
    result = invoke(*shapes, "--resume", tiny_checkpoint_path, "--nheads", 4, "--threshold", 0.15,
                    "--input-size", "128x128", "--batch-size", 2, "--output-dir", tmp_path, "--save-json",
                    "--show-attention")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "detections.json").read_text())
    for image in shapes:
        assert f"{image} (128x128): " in result.output
        out = tmp_path / f"{image.stem}.png"
        before, after = _pixels(image), _pixels(out)
        assert after.shape == before.shape
        mine = [r for r in results if r["image_id"] == int(image.stem)]
        assert mine and {"image_id", "category_id", "bbox", "score"} <= set(mine[0])
        x, y, w, h = (round(v) for v in mine[0]["bbox"])
        assert np.abs(after[y + 1 : y + h - 1, max(x, 1) - 1 : x + 2] - before[y + 1 : y + h - 1, max(x, 1) - 1 : x + 2]).max() > 0
        assert (tmp_path / f"{image.stem}_attention.png").is_file()


def test_bad_files_are_listed_and_good_ones_processed(inputs, tiny_checkpoint_path, tmp_path):
    shapes, odd = inputs
    result = invoke(shapes[0], *odd.values(), tmp_path / "missing.png", "--resume", tiny_checkpoint_path,
                    "--nheads", 4, "--threshold", 0.15, "--batch-size", 3, "--input-size", "160x160",
                    "--output-dir", tmp_path)
    assert result.exit_code == 1
    assert "3 input(s) skipped" in result.output
    for name in (*BAD_FILES, "missing.png"):
        assert f"{name}: " in result.output.split("skipped:")[1]
    for name, (h, w) in ODD_SIZES.items():
        with PIL.Image.open(tmp_path / f"{odd[name].stem}.png") as img:
            assert (img.height, img.width) == (h, w), name
    assert (tmp_path / f"{shapes[0].stem}.png").is_file()


def test_usage_errors(tiny_checkpoint_path, inputs, tmp_path):
    shapes, _ = inputs
    assert invoke(shapes[0]).exit_code == 2
    result = invoke(shapes[0], "--resume", tiny_checkpoint_path, "--model", tiny_checkpoint_path)
    assert result.exit_code == 2 and "exactly one of --resume" in result.output
    not_detr = tmp_path / "x.pth"
    not_detr.write_text("nope")
    result = invoke(shapes[0], "--resume", not_detr, "--output-dir", tmp_path)
    assert result.exit_code == 1 and "not a readable PyTorch checkpoint" in result.output


def test_artifact_without_class_names_falls_back_to_ids(inputs, tiny_checkpoint_path, tmp_path):
    from detr_core import load_checkpoint
    from exporters import export

    shapes, _ = inputs
    artifact = tmp_path / "tiny.onnx"  # the reference checkpoint carries no class names
    export(load_checkpoint(tiny_checkpoint_path, nheads=4), "onnx", artifact, input_size=(128, 128),
           batch_size=2, validate=False)
    result = invoke(*shapes, "--model", artifact, "--threshold", 0.15, "--batch-size", 1,
                    "--output-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "batch size is 2; --batch-size 1 ignored" in result.output
    assert "(onnx, cpu, canvas 128x128, batch 2)" in result.output
    assert "no class names; labels are class ids" in result.output
    assert f"{shapes[0]} (128x128): 12 detections: " in result.output  # labels are ids, e.g. "4 0.18"
    assert all((tmp_path / "out" / f"{p.stem}.png").is_file() for p in shapes)
    assert invoke(shapes[0], "--model", artifact, "--show-attention").exit_code == 2
