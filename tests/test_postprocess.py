"""Post-processing against the reference, threshold / top-k, the module form, TorchScript and ONNX."""

from __future__ import annotations

import warnings

import pytest
import torch

from detr_core.postprocess import PostProcess, postprocess, postprocess_tensors


def test_postprocess_matches_the_reference(tiny_expected):
    results = postprocess(tiny_expected["outputs"], tiny_expected["target_sizes"])
    for got, want in zip(results, tiny_expected["postprocess"], strict=True):
        assert torch.equal(got["labels"], want["labels"])
        assert (got["scores"] - want["scores"]).abs().max() <= 1e-6
        assert (got["boxes"] - want["boxes"]).abs().max() <= 1e-3


def test_threshold_and_top_k(tiny_expected):
    every = postprocess(tiny_expected["outputs"], tiny_expected["target_sizes"])[0]
    threshold = float(every["scores"].median())
    kept = postprocess(tiny_expected["outputs"], tiny_expected["target_sizes"], threshold=threshold)[0]
    assert len(kept["scores"]) == int((every["scores"] > threshold).sum()) and (kept["scores"] > threshold).all()
    top = postprocess(tiny_expected["outputs"], tiny_expected["target_sizes"], top_k=3)[0]
    assert torch.equal(top["scores"], every["scores"].sort(descending=True).values[:3])


def test_boxes_are_pixels_of_the_original_size():
    logits = torch.zeros(1, 1, 3)
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.25]]])
    _, _, pixels = postprocess_tensors(logits, boxes, torch.tensor([[100, 200]]))
    assert torch.allclose(pixels, torch.tensor([[[50.0, 37.5, 150.0, 62.5]]]))


def test_scripted_equals_eager(tiny_expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(postprocess_tensors)
    args = (tiny_expected["outputs"]["pred_logits"], tiny_expected["outputs"]["pred_boxes"],
            tiny_expected["target_sizes"])
    for a, b in zip(scripted(*args), postprocess_tensors(*args), strict=True):
        assert torch.equal(a, b)


def test_module_form_equals_the_function(tiny_expected):
    outputs, sizes = tiny_expected["outputs"], tiny_expected["target_sizes"]
    got = PostProcess(threshold=0.1, top_k=5)(outputs, sizes)
    want = postprocess(outputs, sizes, threshold=0.1, top_k=5)
    for g, w in zip(got, want, strict=True):
        assert all(torch.equal(g[k], w[k]) for k in ("scores", "labels", "boxes"))
        assert len(g["scores"]) <= 5 and (g["scores"] > 0.1).all()


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"threshold": -0.1}, {"top_k": 0}, {"top_k": 2.0}])
def test_bad_threshold_or_top_k_is_refused(tiny_expected, kwargs):
    with pytest.raises(ValueError, match="threshold|top_k"):
        postprocess(tiny_expected["outputs"], tiny_expected["target_sizes"], **kwargs)
    with pytest.raises(ValueError, match="threshold|top_k"):
        PostProcess(**kwargs)


def test_target_sizes_of_the_wrong_shape_are_refused(tiny_expected):
    with pytest.raises(ValueError, match="target_sizes"):
        postprocess(tiny_expected["outputs"], tiny_expected["target_sizes"][:1])


def test_onnx_export_equals_eager(tiny_expected, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class Wrapper(torch.nn.Module):
        def forward(self, logits, boxes, sizes):
            return postprocess_tensors(logits, boxes, sizes)

    args = (tiny_expected["outputs"]["pred_logits"], tiny_expected["outputs"]["pred_boxes"],
            tiny_expected["target_sizes"])
    path = tmp_path / "postprocess.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper(), args, str(path), dynamo=False, opset_version=17,
                          input_names=["logits", "boxes", "sizes"], output_names=["scores", "labels", "boxes_xyxy"])
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"logits": args[0].numpy(), "boxes": args[1].numpy(), "sizes": args[2].numpy()})
    scores, labels, boxes = postprocess_tensors(*args)
    assert (torch.from_numpy(got[0]) - scores).abs().max() <= 1e-6
    assert torch.equal(torch.from_numpy(got[1]), labels)
    assert (torch.from_numpy(got[2]) - boxes).abs().max() <= 1e-3
