"""Every format and both ONNX exporters, at two canvases and batch 1 and 2: validated at export, and
raw outputs equal eager (<= 1e-4) on a second input shape (real images of other sizes, padded)."""

from __future__ import annotations

import pytest
import torch

from exporters.compare import max_abs_diff

from .conftest import CANVASES

TOL = 1e-4


@pytest.mark.parametrize("batch", sorted(CANVASES))
@pytest.mark.parametrize("variant", ["onnx-dynamo", "onnx-legacy", "torchscript", "torch-export"])
def test_export_validates_and_matches_eager(artifacts, runtimes, tiny_model, real_images, variant, batch):
    result = artifacts(variant, batch)
    report = result.validation
    assert report.ok, report.table()
    assert report.max_abs_diff <= TOL
    names = [row.name for row in report.rows]
    assert len(report.rows) == (2 if batch == 1 else 4)
    assert batch == 1 or sum("batch-mates" in n for n in names) == 2

    runtime = runtimes(variant, batch)
    assert runtime.metadata.input_size == CANVASES[batch] and runtime.metadata.batch_size == batch
    images, mask, sizes = runtime.prepare(real_images[2:2 + batch])
    assert mask.any() and (~mask).any()  # a second input shape: real images of other sizes, padded
    out = runtime(images, mask)
    with torch.inference_mode():
        ref = tiny_model(images, mask)
    assert max_abs_diff(out["pred_logits"], ref["pred_logits"]) <= TOL
    assert max_abs_diff(out["pred_boxes"], ref["pred_boxes"]) <= TOL


def test_torchscript_trace_matches_eager(artifacts):
    report = artifacts("torchscript-trace", 2).validation
    assert report.ok and report.max_abs_diff <= TOL, report.table()


@pytest.mark.parametrize("variant", ["onnx-dynamo", "torchscript"])
def test_with_postprocess_matches_eager_detections(artifacts, runtimes, tiny_model, real_images, variant):
    from detr_core.postprocess import postprocess_tensors

    result = artifacts(variant, 2, with_postprocess=True)
    assert result.validation.ok, result.validation.table()
    runtime = runtimes(variant, 2, with_postprocess=True)
    assert runtime.output_names == ("scores", "labels", "boxes")
    images, mask, sizes = runtime.prepare(real_images[:2])
    out = runtime(images, mask, sizes)
    with torch.inference_mode():
        ref = tiny_model(images, mask)
        scores, labels, boxes = postprocess_tensors(ref["pred_logits"], ref["pred_boxes"], sizes)
    assert out["labels"].dtype == torch.int64
    assert max_abs_diff(out["scores"], scores) <= TOL
    assert max_abs_diff(out["boxes"], boxes) <= TOL * 200  # pixels of ~128-px images
