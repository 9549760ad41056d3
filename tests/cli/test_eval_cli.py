"""``detrtool eval`` in-process: the tiny reference checkpoint on a small COCO set, end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cli.main import cli
from tests.training.helpers import make_small_coco, make_tiny_shapes

ANN = "annotations/instances_val2017.json"


pytestmark = pytest.mark.usefixtures("one_thread")  # training tests: 1 thread is ~20x faster on a loaded 2-core box


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return make_small_coco(tmp_path_factory.mktemp("coco"))


def _eval(checkpoint: Path, root: Path, out: Path, *extra: str):
    args = ["eval", "--resume", str(checkpoint), "--val-images", str(root / "val2017"), "--val-ann", str(root / ANN),
            "--output-dir", str(out), "--eval-size", "64", "--no-progress", *extra]
    return CliRunner().invoke(cli, args)


def _pycocotools_stats(ann: Path, detections: Path) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        dt = gt.loadRes(str(detections))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.fixture(scope="module")
def pycocotools_run(coco_root, tiny_checkpoint_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_pycocotools")
    return _eval(tiny_checkpoint_path, coco_root, out, "--nheads", "4", "--evaluator", "pycocotools"), out


def test_eval_tiny_checkpoint_end_to_end(pycocotools_run, coco_root):
    result, out = pycocotools_run
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("loss: ") and "loss_ce=" in lines[0]
    summary = [line for line in lines if line.startswith((" Average Precision", " Average Recall"))]
    assert len(summary) == 12
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == 5 * 12  # every query (12) of every image (5, one without ground truth)
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["coco_eval_bbox"]["stats"] == pytest.approx(_pycocotools_stats(coco_root / ANN, out / "detections.json"),
                                                               abs=1e-12)


def test_faster_evaluator_agrees_with_pycocotools(pycocotools_run, coco_root, tiny_checkpoint_path, tmp_path):
    result = _eval(tiny_checkpoint_path, coco_root, tmp_path, "--nheads", "4", "--evaluator", "faster")
    assert result.exit_code == 0, result.output
    faster = json.loads((tmp_path / "metrics.json").read_text())["coco_eval_bbox"]["stats"]
    reference = json.loads((pycocotools_run[1] / "metrics.json").read_text())["coco_eval_bbox"]["stats"]
    assert faster == pytest.approx(reference, abs=1e-4)


def test_pad_to_makes_detections_independent_of_batch_size(coco_root, tiny_checkpoint_path, tmp_path):
    runs = {}
    for batch in (1, 4):
        out = tmp_path / f"b{batch}"
        result = _eval(tiny_checkpoint_path, coco_root, out, "--nheads", "4", "--pad-to", "112x112",
                       "--batch-size", str(batch))
        assert result.exit_code == 0, result.output
        runs[batch] = json.loads((out / "detections.json").read_text())
    assert len(runs[1]) == len(runs[4])
    for a, b in zip(runs[1], runs[4], strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-5 * 112)


def test_eval_of_a_detrtool_run_uses_its_transforms(tmp_path):
    root = make_tiny_shapes(tmp_path / "shapes")
    train = CliRunner().invoke(cli, ["train", "--coco-path", str(root), "--output-dir", str(tmp_path / "run"),
                                     "--epochs", "1", "--backbone", "small_cnn", "--hidden-dim", "32", "--nheads", "2",
                                     "--enc-layers", "1", "--dec-layers", "1", "--dim-feedforward", "64",
                                     "--num-queries", "5", "--transforms", "shapes", "--image-size", "64",
                                     "--batch-size", "4", "--num-workers", "0", "--no-progress"])
    assert train.exit_code == 0, train.output
    result = CliRunner().invoke(cli, ["eval", "--resume", str(tmp_path / "run" / "checkpoint.pth"), "--coco-path",
                                      str(root), "--output-dir", str(tmp_path / "eval"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "eval" / "detections.json").read_text())) == 4 * 5


def test_eval_errors_are_one_line(coco_root, tiny_checkpoint_path, tmp_path):
    result = _eval(tiny_checkpoint_path, coco_root, tmp_path, "--nheads", "4", "--pad-to", "32x32")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: ") and "--pad-to" in result.output
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = _eval(bad, coco_root, tmp_path)
    assert result.exit_code == 1 and "not a readable PyTorch checkpoint" in result.output
