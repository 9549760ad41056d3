"""Post-processing against the reference, threshold / top-k, and TorchScript."""

from __future__ import annotations

import warnings

import torch

from detr_core.postprocess import postprocess, postprocess_tensors


def test_postprocess_matches_the_reference(tiny_expected):
    results = postprocess(tiny_expected["outputs"], tiny_expected["target_sizes"])
    for got, want in zip(results, tiny_expected["postprocess"]):
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
    for a, b in zip(scripted(*args), postprocess_tensors(*args)):
        assert torch.equal(a, b)
