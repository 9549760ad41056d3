"""``detrtool eval`` and ``predict`` take a Hugging Face DETR folder as ``--resume``: architecture (4 heads)
and class names (``id2label``) come from its config.json, nothing passed by hand."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.main import cli
from tests.exporters.predict.images import shapes_val_images
from tests.hf.models import LABELS
from tests.training.helpers import make_small_coco


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_eval_hf_folder_equals_its_official_conversion(hf_folder, tmp_path):
    root = make_small_coco(tmp_path / "coco")
    data = ["--val-images", root / "val2017", "--val-ann", root / "annotations/instances_val2017.json",
            "--eval-size", 64, "--no-progress"]
    hf = invoke("eval", "--resume", hf_folder, *data, "--output-dir", tmp_path / "hf")
    assert hf.exit_code == 0, hf.output
    assert invoke("convert", hf_folder, "--to", "official", "--output", tmp_path / "o.pth").exit_code == 0
    official = invoke("eval", "--resume", tmp_path / "o.pth", "--nheads", 4, *data, "--output-dir", tmp_path / "off")
    assert official.exit_code == 0, official.output
    assert len([line for line in hf.output.splitlines() if line.startswith(" Average")]) == 12
    hf_metrics, official_metrics = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("hf", "off"))
    assert hf_metrics.pop("checkpoint") != official_metrics.pop("checkpoint")
    assert hf_metrics == official_metrics
    detections = json.loads((tmp_path / "hf" / "detections.json").read_text())
    assert len(detections) == 5 * 7 and detections == json.loads((tmp_path / "off" / "detections.json").read_text())


def test_predict_hf_folder_names_classes_from_id2label(hf_folder, tmp_path):
    images = shapes_val_images(tmp_path / "images", count=1)
    result = invoke("predict", *images, "--resume", hf_folder, "--threshold", 0.01, "--input-size", "128x128",
                    "--output-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    summary = next(line for line in result.output.splitlines() if line.startswith(f"{images[0]} "))
    assert any(f"{name} " in summary for name in LABELS), summary
    assert (tmp_path / "out" / f"{images[0].stem}.png").is_file()
