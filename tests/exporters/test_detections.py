"""Detection sets above a score threshold agree between eager and the artifacts (on a genuinely trained
model with confident detections, see ``trained_shapes`` in tests/conftest.py), and a wrong artifact fails
validation."""

from __future__ import annotations

import pytest
import torch

from detr_core.registry import build_model
from exporters import export
from exporters.validate import ValidationError, validate_artifact

THRESHOLD = 0.7


@pytest.mark.parametrize("fmt, suffix, options", [
    ("onnx", ".onnx", {}),
    ("onnx", ".onnx", {"exporter": "legacy", "opset": 17}),
    ("torchscript", ".ts", {}),
    ("torch-export", ".pt2", {}),
])
def test_detection_sets_agree(trained_model, trained_shapes, tmp_path, fmt, suffix, options):
    # The training images at the training resize rule (shorter side 96): the model is confident there.
    size = trained_shapes.image_size
    result = export(trained_model, fmt, tmp_path / f"trained{suffix}", input_size=(size, size * 5 // 3),
                    batch_size=2, size=size, max_size=size * 5 // 3, validate_images=trained_shapes.images,
                    validate_threshold=THRESHOLD, **options)
    report = result.validation
    assert report.ok, report.table()
    assert all(row.agreeing == row.detections for row in report.rows), report.table()
    assert all(row.detections >= 10 for row in report.rows[1:]), report.table()  # the real-image rows
    assert f"detections > {THRESHOLD:g} agreeing" in report.table()


def test_wrong_artifact_fails_validation(trained_model, images_dir, tmp_path):
    path = tmp_path / "other.onnx"
    export(trained_model, "onnx", path, input_size=(96, 128), exporter="legacy", opset=17, validate=False)
    torch.manual_seed(1)
    untrained = build_model(trained_model.config).eval()  # same architecture, other weights
    with pytest.raises(ValidationError, match="differs from eager") as info:
        validate_artifact(untrained, path, images=images_dir, threshold=THRESHOLD)
    report = info.value.report
    assert not report.ok and report.max_abs_diff > 1e-4
    assert "FAIL" in report.table()
    quiet = validate_artifact(untrained, path, images=images_dir, raise_on_failure=False)
    assert not quiet.ok
