"""``detrtool train`` and ``detrtool plot`` in-process with click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from cli.main import cli
from tests.training.helpers import make_tiny_shapes

TINY = ["--backbone", "small_cnn", "--hidden-dim", "32", "--nheads", "2", "--enc-layers", "1", "--dec-layers", "2",
        "--dim-feedforward", "64", "--num-queries", "5", "--dropout", "0", "--transforms", "shapes",
        "--image-size", "64", "--batch-size", "4", "--num-workers", "0", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")  # training tests: 1 thread is ~20x faster on a loaded 2-core box


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return make_tiny_shapes(tmp_path_factory.mktemp("shapes"))


def test_train_writes_run_and_plot_draws_it(shapes_root, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--coco-path", str(shapes_root), "--output-dir", str(out),
                                      "--epochs", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"done: {out}")
    assert {"checkpoint.pth", "config.yaml", "log.jsonl"} <= {p.name for p in out.iterdir()}
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert {"train_loss", "test_loss", "test_AP", "test_AP50", "n_parameters", "train_minutes"} <= set(records[0])

    plotted = CliRunner().invoke(cli, ["plot", str(out)])
    assert plotted.exit_code == 0, plotted.output
    for name in ("loss.png", "ap.png", "ap_minutes.png"):
        assert f"wrote {out / name}" in plotted.output and (out / name).stat().st_size > 1000


def test_yaml_config_with_cli_override_and_resolved_config_saved(shapes_root, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"epochs": 3, "lr": 5e-4, "model": {"num_queries": 4}, "seed": 11}))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--config", str(settings), "--coco-path", str(shapes_root),
                                      "--output-dir", str(out), *TINY, "--epochs", "1", "--num-queries", "6",
                                      "--cache-images"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["lr"] == 5e-4 and saved["seed"] == 11 and saved["cache_images"] is True
    assert saved["model"]["num_queries"] == 6 and saved["model"]["num_classes"] == 3
    assert saved["data"]["coco_path"] == str(shapes_root)


def test_resume_of_official_checkpoint_with_other_num_classes(shapes_root, tmp_path, tiny_checkpoint_path):
    out = tmp_path / "ft"
    args = ["train", "--resume", str(tiny_checkpoint_path), "--nheads", "4", "--num-classes", "3",
            "--coco-path", str(shapes_root), "--output-dir", str(out), "--epochs", "1", "--transforms", "shapes",
            "--image-size", "64", "--batch-size", "4", "--num-workers", "0", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert torch.load(out / "checkpoint.pth", weights_only=True)["model"]["class_embed.weight"].shape == (4, 64)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-classes", "2"], "do not fit num_classes=2"),
        (["--image-size", "8"], "smaller than the backbone stride 16"),
        (["--hidden-dim", "30", "--nheads", "4"], "not divisible by nheads"),
    ],
)
def test_bad_input_is_one_error_line(shapes_root, tmp_path, extra, message):
    result = CliRunner().invoke(cli, ["train", "--coco-path", str(shapes_root), "--output-dir", str(tmp_path / "x"),
                                      *TINY, *extra])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in lines[-1]
    assert "Traceback" not in result.output


def test_bad_config_file_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    result = CliRunner().invoke(cli, ["train", "--config", str(bad)])
    assert result.exit_code == 1 and "unknown setting 'epochz'" in result.output


def test_plot_without_log_is_one_error_line(tmp_path):
    result = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 1 and "no training log" in result.output
