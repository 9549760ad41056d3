"""The mask is a live graph input, and an image's outputs do not depend on its batch-mates."""

from __future__ import annotations

import pytest
import torch

from exporters.compare import max_abs_diff

TOL = 1e-4


def _eager(model, images, mask):
    with torch.inference_mode():
        out = model(images, mask)
    return out["pred_logits"], out["pred_boxes"]


@pytest.mark.parametrize("variant", ["onnx-dynamo", "onnx-legacy"])
def test_onnx_mask_is_live(artifacts, runtimes, tiny_model, variant):
    runtime = runtimes(variant, 2)
    images = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(3))
    mask_a = torch.zeros(2, 128, 160, dtype=torch.bool)
    mask_b = mask_a.clone()
    mask_b[0, :, 96:] = True
    mask_b[1, 80:, :] = True
    out_a, out_b = runtime(images, mask_a), runtime(images, mask_b)
    eager_a, eager_b = _eager(tiny_model, images, mask_a), _eager(tiny_model, images, mask_b)
    change = max_abs_diff(out_a["pred_logits"], out_b["pred_logits"])
    assert change > 1e-2  # the mask changes the outputs (it is not baked in) ...
    for got, want in ((out_a, eager_a), (out_b, eager_b)):  # ... exactly as it changes eager's
        assert max_abs_diff(got["pred_logits"], want[0]) <= TOL
        assert max_abs_diff(got["pred_boxes"], want[1]) <= TOL
    eager_change = (eager_b[0] - eager_a[0]).double()
    assert max_abs_diff(out_b["pred_logits"].double() - out_a["pred_logits"].double(), eager_change) <= 2 * TOL


@pytest.mark.parametrize("variant", ["onnx-dynamo", "onnx-legacy", "torchscript", "torch-export"])
def test_batch_mate_invariance(artifacts, runtimes, tiny_model, real_images, variant):
    """Image 0 alone (eager, batch 1 canvas) == image 0 next to another image, in the runtime."""
    runtime = runtimes(variant, 2)
    alone_images, alone_mask, _ = runtime.prepare(real_images[:1])  # slot 1: black filler
    alone = _eager(tiny_model, alone_images[:1], alone_mask[:1])
    for mate in (real_images[1], real_images[4]):
        out = runtime(*runtime.prepare([real_images[0], mate])[:2])
        assert max_abs_diff(out["pred_logits"][0], alone[0][0]) <= TOL
        assert max_abs_diff(out["pred_boxes"][0], alone[1][0]) <= TOL
