"""The DETR forward pass against the reference fixtures, batch-mate invariance and TorchScript."""

from __future__ import annotations

import warnings

import pytest
import torch

from detr_core import load_checkpoint, pad_images

ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint_path):
    return load_checkpoint(tiny_checkpoint_path, nheads=4)


def _assert_outputs_close(out: dict, expected: dict, atol: float = ATOL) -> None:
    for key in ("pred_logits", "pred_boxes"):
        diff = (out[key] - expected[key]).abs().max().item()
        assert diff <= atol, f"{key} differs by {diff}"
    expected_aux = expected.get("aux_outputs", [])
    if expected_aux:  # a reference without aux outputs compares none
        assert len(out["aux_outputs"]) == len(expected_aux)
        for got, want in zip(out["aux_outputs"], expected_aux, strict=True):
            for key in ("pred_logits", "pred_boxes"):
                assert (got[key] - want[key]).abs().max().item() <= atol


@torch.no_grad()
def test_padded_batch_with_mask_matches_reference(tiny_model, tiny_expected):
    out = tiny_model(tiny_expected["padded"], tiny_expected["mask"])
    assert out["pred_logits"].shape == (2, 12, 8)
    assert out["pred_boxes"].shape == (2, 12, 4)
    _assert_outputs_close(out, tiny_expected["outputs"])


@torch.no_grad()
def test_single_unpadded_image_matches_reference(tiny_model, tiny_expected):
    out = tiny_model(tiny_expected["images"][0][None])
    _assert_outputs_close(out, tiny_expected["single_outputs"])


@torch.no_grad()
def test_padding_without_mask_matches_reference_and_differs_from_masked(tiny_model, tiny_expected):
    out = tiny_model(tiny_expected["padded"])
    _assert_outputs_close(out, tiny_expected["padded_nomask_outputs"])
    masked = tiny_expected["outputs"]["pred_logits"]
    assert (out["pred_logits"] - masked).abs().max() > 1e-2, "the mask must change the outputs"


@torch.no_grad()
def test_pad_images_rebuilds_the_fixture_batch(tiny_expected):
    images, mask = pad_images(tiny_expected["images"])
    assert torch.equal(images, tiny_expected["padded"])
    assert torch.equal(mask, tiny_expected["mask"])


@torch.no_grad()
def test_batch_mate_invariance_in_a_fixed_canvas(tiny_model):
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(3, 90, 110, generator=generator)
    mate = torch.randn(3, 128, 64, generator=generator)
    alone = tiny_model(*pad_images([image], pad_to=(128, 128)))
    together = tiny_model(*pad_images([image, mate], pad_to=(128, 128)))
    for key in ("pred_logits", "pred_boxes"):
        assert (alone[key][0] - together[key][0]).abs().max() <= 1e-5


@torch.no_grad()
def test_scripted_model_equals_eager(tiny_model, tiny_expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(tiny_model)
    for images, mask in ((tiny_expected["padded"], tiny_expected["mask"]), (torch.randn(1, 3, 64, 96), None)):
        eager, script = tiny_model(images, mask), scripted(images, mask)
        for key in ("pred_logits", "pred_boxes"):
            assert torch.equal(eager[key], script[key])
        assert torch.equal(eager["aux_outputs"][0]["pred_boxes"], script["aux_outputs"][0]["pred_boxes"])


def test_bad_inputs_give_clear_errors(tiny_model):
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        tiny_model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="mask must be bool"):
        tiny_model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match=r"mask must be \[B, H, W\]"):
        tiny_model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 32, 64, dtype=torch.bool))


def test_no_aux_outputs_when_aux_loss_off(tiny_checkpoint_path):
    model = load_checkpoint(tiny_checkpoint_path, nheads=4, aux_loss=False)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert set(out) == {"pred_logits", "pred_boxes"}


def test_subsample_mask_picks_the_pixels_nearest_interpolation_picks():
    """The feature mask is gathered by explicit indices (ONNX Resize reads a row early when H / h is whole);
    they must be exactly torch's nearest rule for every downsampling."""
    import torch.nn.functional as F

    from detr_core.models.detr import nearest_indices, subsample_mask

    for in_size in range(2, 121):
        probe = torch.arange(in_size, dtype=torch.float32)[None, None, :, None]
        for out_size in range(1, in_size):
            expected = F.interpolate(probe, size=(out_size, 1))[0, 0, :, 0].long()
            assert torch.equal(nearest_indices(in_size, out_size, probe.device), expected), (in_size, out_size)
    mask = torch.zeros(2, 120, 128, dtype=torch.bool)
    mask[0, 90:] = True
    assert subsample_mask(mask, 4, 4)[0, 3].all() and not subsample_mask(mask, 4, 4)[1].any()
