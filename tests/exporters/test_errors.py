"""Bad input, one clear error each: unknown format, opset too low, wrong input shape or dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporters import InputError, export, get_format
from exporters.formats import UnknownFormatError, format_for_path
from exporters.onnx import OpsetError


def test_unknown_format_lists_known_names(tiny_model, tmp_path):
    with pytest.raises(UnknownFormatError, match="known formats: torchscript, onnx, torch-export"):
        get_format("tflite")
    with pytest.raises(UnknownFormatError):
        export(tiny_model, "tflite", tmp_path / "m.tflite")
    with pytest.raises(UnknownFormatError, match="cannot tell the format"):
        format_for_path(tmp_path / "model.bin")


@pytest.mark.parametrize("exporter, opset", [("dynamo", 17), ("legacy", 13)])
def test_opset_too_low(tiny_model, tmp_path, exporter, opset):
    with pytest.raises(OpsetError, match=f"opset {opset} is too low for the {exporter}"):
        export(tiny_model, "onnx", tmp_path / "m.onnx", exporter=exporter, opset=opset)
    assert not (tmp_path / "m.onnx").exists()


def test_bad_options_and_suffix(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="has no option"):
        export(tiny_model, "torchscript", tmp_path / "m.ts", opset=18)
    with pytest.raises(ValueError, match="choose from script, trace"):
        export(tiny_model, "torchscript", tmp_path / "m.ts", method="freeze")
    with pytest.raises(ValueError, match="must end with .onnx"):
        export(tiny_model, "onnx", tmp_path / "m.ts")


@pytest.mark.parametrize("variant", ["onnx-legacy", "torchscript", "torch-export"])
def test_wrong_input_at_run_time(artifacts, runtimes, variant):
    runtime = runtimes(variant, 1)
    images = torch.zeros(1, 3, 96, 128)
    mask = torch.zeros(1, 96, 128, dtype=torch.bool)
    cases = [
        (torch.zeros(1, 3, 128, 128), mask, "expected float32 \\[1, 3, 96, 128\\], got float32 \\[1, 3, 128, 128\\]"),
        (torch.zeros(2, 3, 96, 128), mask, "static batch 1"),
        (images.double(), mask, "got float64"),
        (images, mask.to(torch.uint8), "input 'mask': expected bool"),
    ]
    for bad_images, bad_mask, message in cases:
        with pytest.raises(InputError, match=message) as info:
            runtime(bad_images, bad_mask)
        assert "\n" not in str(info.value)
    out = runtime(images.numpy(), np.zeros((1, 96, 128), dtype=bool))  # numpy works too
    assert out["pred_logits"].shape == (1, 12, 8)


def test_postprocess_artifact_needs_orig_sizes(artifacts, runtimes):
    runtime = runtimes("torchscript", 2, with_postprocess=True)
    images, mask = torch.zeros(2, 3, 128, 160), torch.zeros(2, 128, 160, dtype=torch.bool)
    with pytest.raises(InputError, match="needs input 'orig_sizes'"):
        runtime(images, mask)
    with pytest.raises(InputError, match="expected int64"):
        runtime(images, mask, torch.zeros(2, 2, dtype=torch.int32))
