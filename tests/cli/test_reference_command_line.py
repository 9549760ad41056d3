"""The seed's command line with ``python main.py`` replaced by ``detrtool`` runs, on a VOCdevkit year folder
(recognised as VOC, and said so) and on a COCO folder, and prints the same 12-line summary as
``detrtool eval`` with its own option names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.data import write_voc
from tests.data.handmade import coco91_checkpoint
from tests.training.helpers import make_small_coco

pytestmark = pytest.mark.usefixtures("one_thread")


def _summary(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith((" Average Precision", " Average Recall"))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return coco91_checkpoint(tmp_path_factory.mktemp("ckpt") / "detr-coco91.pth")


@pytest.fixture(scope="module")
def voc_year(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc")) / "VOC2007"


def _run(args: list[str]):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result


def test_seed_command_line_on_a_voc_year_folder(checkpoint, voc_year, tmp_path, caplog):
    seed = ["--batch_size", "2", "--no_aux_loss", "--eval", "--resume", str(checkpoint), "--coco_path", str(voc_year)]
    with caplog.at_level(logging.INFO):
        ours = _run([*seed, "--output_dir", str(tmp_path / "seed"), "--eval-size", "64", "--no-progress"])
    said = [r.getMessage() for r in caplog.records if "is a Pascal VOC2007 folder" in r.getMessage()]
    assert len(said) == 1 and "read as --voc-root" in said[0]
    own = _run(["eval", "--resume", str(checkpoint), "--voc-root", str(voc_year.parent), "--batch-size", "2",
                "--no-aux-loss", "--output-dir", str(tmp_path / "own"), "--eval-size", "64", "--no-progress"])
    assert len(_summary(ours.output)) == 12
    assert _summary(ours.output) == _summary(own.output)
    assert (tmp_path / "seed" / "detections.json").read_text() == (tmp_path / "own" / "detections.json").read_text()


def test_seed_command_line_on_a_coco_folder(tiny_checkpoint_path, tmp_path):
    root = make_small_coco(tmp_path / "coco")
    seed = ["--batch_size", "2", "--no_aux_loss", "--eval", "--resume", str(tiny_checkpoint_path),
            "--coco_path", str(root), "--nheads", "4", "--transforms", "shapes", "--image_size", "64", "--no-progress"]
    ours = _run([*seed, "--output_dir", str(tmp_path / "seed"), "--lr_backbone", "1e-5", "--dataset_file", "coco"])
    assert "ignoring the reference option(s) --lr_backbone 1e-5 --dataset_file coco" in ours.output
    own = _run(["eval", "--resume", str(tiny_checkpoint_path), "--val-images", str(root / "val2017"), "--val-ann",
                str(root / "annotations/instances_val2017.json"), "--batch-size", "2", "--no-aux-loss", "--nheads", "4",
                "--transforms", "shapes", "--image-size", "64", "--no-progress", "--output-dir", str(tmp_path / "own")])
    via_train = _run(["train", *seed, "--output_dir", str(tmp_path / "train")])
    assert len(_summary(ours.output)) == 12
    assert _summary(ours.output) == _summary(own.output) == _summary(via_train.output)
    loss_line = [line for line in ours.output.splitlines() if line.startswith("loss: ")]
    assert loss_line == [line for line in own.output.splitlines() if line.startswith("loss: ")]
    assert "loss_ce_0" not in loss_line[0] and "cardinality_error_unscaled=" in loss_line[0]


def test_masks_on_a_detector_checkpoint_is_refused_in_one_line(tiny_checkpoint_path, tmp_path):
    from tests.cli.bad_input import check_bad_input

    check_bad_input(["--eval", "--masks", "--resume", str(tiny_checkpoint_path), "--nheads", "4",
                     "--output_dir", str(tmp_path / "out")],
                    names=["--masks", "tiny_checkpoint.pth", "detector checkpoint"], exit_code=1)
