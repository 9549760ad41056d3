"""``detrtool eval``, ``predict``, ``export`` and ``bench`` take a Hugging Face DETR folder as ``--resume``:
architecture (4 heads) and class names (``id2label``) come from its config.json, nothing passed by hand."""

from __future__ import annotations

import json

from click.testing import CliRunner
from transformers import DetrForObjectDetection

from cli.main import cli
from detr_core.data.shapes import ShapesParams, generate_shapes
from exporters import load_runtime, read_metadata
from tests.exporters.predict.images import shapes_val_images
from tests.hf.models import LABELS, hf_outputs, padded_batch
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


def test_export_hf_folder_dynamic_carries_config_and_class_names(hf_folder, tmp_path):
    out = tmp_path / "hf.onnx"
    result = invoke("export", "--resume", hf_folder, "--format", "onnx", "--exporter", "legacy", "--opset", 17,
                    "--input-size", "128x128", "--dynamic", "--output", out)
    assert result.exit_code == 0, result.output
    assert "dynamic batch/height/width" in result.output and "validation ok" in result.output
    meta = read_metadata(out)
    assert meta.class_names == tuple(LABELS) and meta.num_queries == 7 and meta.model_config["nheads"] == 4
    assert meta.extra["checkpoint"] == hf_folder.name and len(meta.extra["checkpoint_sha256"]) == 64
    images, mask = padded_batch()  # a padded batch of 2 at 128x128, unlike the example
    reference = hf_outputs(DetrForObjectDetection.from_pretrained(hf_folder).eval(), images, mask)
    got = load_runtime(out)(images, mask)
    assert (got["pred_logits"] - reference["pred_logits"]).abs().max() <= 1e-4
    assert (got["pred_boxes"] - reference["pred_boxes"]).abs().max() <= 1e-4


def test_bench_hf_folder(hf_folder, tmp_path):
    root = generate_shapes(tmp_path / "shapes", ShapesParams(seed=3, image_size=64, train_count=0, val_count=2),
                           progress=False)
    result = invoke("bench", "--resume", hf_folder, "--coco-path", root, "--input-size", "128x128",
                    "--formats", "eager,torch-export", "--warmup", 1, "--runs", 2, "--calibration-images", 2,
                    "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "| torch-export | cpu | fp32 | ✅ |" in result.output
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert hf_folder.name in data["setup"]["title"]
    assert {r["name"]: r["status"] for r in data["rows"]}["torch-export"] == "✅"


def test_predict_panoptic_hf_segmentation_folder_equals_its_official_conversion(hf_segm_folder, tmp_path):
    """An HF DetrForSegmentation folder predicts as a DETRsegm (masks, panoptic map); its official conversion
    loads as one too and gives the same panoptic PNG and segments."""
    converted = invoke("convert", hf_segm_folder, "--to", "official", "--output", tmp_path / "segm.pth")
    assert converted.exit_code == 0, converted.output
    images = shapes_val_images(tmp_path / "images", count=1)
    common = ["--threshold", 0.01, "--input-size", "128x128", "--panoptic", "--panoptic-threshold", 0.5]
    for name, source in (("hf", ["--resume", hf_segm_folder]), ("off", ["--resume", tmp_path / "segm.pth", "--nheads", 8])):
        result = invoke("predict", *images, *source, *common, "--output-dir", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert "masks > 0.5" in result.output and "panoptic PNG" in result.output
    hf, off = (json.loads((tmp_path / d / "panoptic.json").read_text())["annotations"] for d in ("hf", "off"))
    assert hf == off and hf[0]["segments_info"], hf
    png = f"panoptic/{images[0].stem}.png"
    assert (tmp_path / "hf" / png).read_bytes() == (tmp_path / "off" / png).read_bytes()
