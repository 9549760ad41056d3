"""Detection sets above a score threshold agree between eager and the artifacts (on a model with
confident detections, see ``confident_model``), and a wrong artifact fails validation."""

from __future__ import annotations

import pytest

from exporters import export
from exporters.validate import ValidationError, validate_artifact

THRESHOLD = 0.7
#: The stand-in head needs large weights (its decoder states barely vary), which scales fp32 rounding of
#: the states up to ~8e-5 in logits; the raw-parity tests hold the 1e-4 tolerance on the unmodified model.
CONFIDENT_TOL = 5e-4


@pytest.mark.parametrize("fmt, suffix, options", [("onnx", ".onnx", {}), ("torchscript", ".ts", {})])
def test_detection_sets_agree(confident_model, images_dir, tmp_path, fmt, suffix, options):
    result = export(confident_model, fmt, tmp_path / f"confident{suffix}", input_size=(128, 160), batch_size=2,
                    validate_images=images_dir, validate_threshold=THRESHOLD, tolerance=CONFIDENT_TOL, **options)
    report = result.validation
    assert report.ok, report.table()
    assert all(row.agreeing == row.detections for row in report.rows), report.table()
    assert all(row.detections >= 10 for row in report.rows[1:]), report.table()  # the real-image rows
    assert f"detections > {THRESHOLD:g} agreeing" in report.table()


def test_wrong_artifact_fails_validation(confident_model, tiny_model, images_dir, tmp_path):
    path = tmp_path / "other.onnx"
    export(confident_model, "onnx", path, input_size=(96, 128), exporter="legacy", opset=17, validate=False)
    with pytest.raises(ValidationError, match="differs from eager") as info:
        validate_artifact(tiny_model, path, images=images_dir, threshold=THRESHOLD)
    report = info.value.report
    assert not report.ok and report.max_abs_diff > 1e-4
    assert "FAIL" in report.table()
    quiet = validate_artifact(tiny_model, path, images=images_dir, raise_on_failure=False)
    assert not quiet.ok
