"""Export of the segmentation model (DETRsegm): every format of the table writes ``pred_masks`` beside the
boxes with the mask a live input; the artifacts match the reference fixture (``segm_tiny_expected``) and eager
(raw |Δ| <= 1e-4, mask IoU >= 0.99 on confident queries), and validation fails a model whose masks differ."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detr_core import ModelConfig, build_model
from detr_core.checkpoint import load_checkpoint
from exporters import export, load_runtime
from exporters.formats import FORMATS
from exporters.validate import MASK_IOU_MIN, confident_queries, mask_agreement, mask_ious, validate_artifact
from exporters.validation_inputs import example_inputs
from exporters.wrapper import wrap

SMALL_SEGM = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=5, num_classes=4, masks=True)
SMALL_CANVAS = (64, 96)
RAW = ("pred_logits", "pred_boxes", "pred_masks")
#: id -> (format, options, with_postprocess): with the reference variants below, every format of the table
SMALL_VARIANTS = {
    "torchscript-trace": ("torchscript", {"method": "trace"}, False),
    "onnx-legacy": ("onnx", {"exporter": "legacy", "opset": 17}, False),
    "torch-export": ("torch-export", {}, False),
    "openvino": ("openvino", {}, False),
    "onnx-dynamo-post": ("onnx", {"exporter": "dynamo"}, True),
    "executorch": ("executorch", {}, False),
}
#: Formats that refuse a segmentation export (and why): litert-torch 0.10 converts the tiny panoptic model's
#: mask head with ``pred_masks`` off by ~2.0 (validation refuses it) and cannot convert this small one at all (a
#: broadcast of more than 8 dimensions), so no LiteRT panoptic artifact is ever written.
REFUSED_SEGM = {"litert": "pred_masks wrong by ~2.0, or no conversion"}
#: id -> (format, options, validate at export with the images_dir crops)
REFERENCE_VARIANTS = {"torchscript": ("torchscript", {}, True), "onnx-dynamo": ("onnx", {"exporter": "dynamo"}, True)}


@pytest.fixture(scope="module")
def segm_model(segm_checkpoint_path):
    return load_checkpoint(segm_checkpoint_path, nheads=8).eval()


@pytest.fixture(scope="module")
def small_segm():
    torch.manual_seed(0)
    return build_model(SMALL_SEGM).eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def test_every_format_of_the_table_is_covered():
    assert {fmt for fmt, _, _ in SMALL_VARIANTS.values()} | set(REFUSED_SEGM) == set(FORMATS)


@pytest.mark.parametrize("fmt", REFUSED_SEGM)
def test_a_format_that_gets_the_masks_wrong_is_refused_at_export(fmt, small_segm, images_dir, tmp_path):
    from exporters.validate import ValidationError

    pytest.importorskip("litert_torch", reason="the edge extra is not installed (pip install detrtool[edge])")
    path = tmp_path / f"small{FORMATS[fmt].suffix}"
    with pytest.raises((ValidationError, ValueError)):
        export(small_segm, fmt, path, input_size=SMALL_CANVAS, batch_size=2, validate_images=images_dir)
    assert list(tmp_path.iterdir()) == []  # nothing written: the refused artifact never reaches its path


@pytest.mark.parametrize("variant", REFERENCE_VARIANTS)
def test_reference_segm_parity_and_live_mask(variant, segm_model, segm_expected, images_dir, tmp_path):
    fmt, options, validate = REFERENCE_VARIANTS[variant]
    padded, mask = segm_expected["padded"], segm_expected["mask"]
    path = tmp_path / f"segm{FORMATS[fmt].suffix}"
    result = export(segm_model, fmt, path, input_size=tuple(padded.shape[-2:]), batch_size=2,
                    validate_images=images_dir, validate=validate, **options)
    meta, report = result.metadata, result.validation
    assert (meta.masks, meta.mask_stride, meta.output_names) == (True, 4, RAW)
    if validate:
        assert report.ok and report.masks and report.min_mask_iou >= MASK_IOU_MIN and report.max_abs_diff <= 1e-4
    runtime = load_runtime(path)
    out = runtime(padded, mask)
    for key in RAW:  # the fixture's outputs on the padded batch with its live mask
        assert _max_diff(out[key], segm_expected["outputs"][key]) <= 1e-4, key
    # padding matters: with an all-False mask eager's logits change (this random model's masks hardly: its
    # attention maps are flat; the small model below shows the masks following the mask), the artifact follows
    unmasked = torch.zeros_like(mask)
    with torch.no_grad():
        eager = dict(zip(RAW, wrap(segm_model)(padded, unmasked), strict=True))
    assert _max_diff(eager["pred_logits"], segm_expected["outputs"]["pred_logits"]) > 1e-2
    out_unmasked = runtime(padded, unmasked)
    assert all(_max_diff(out_unmasked[key], eager[key]) <= 1e-4 for key in RAW)
    scores = eager["pred_logits"].softmax(-1)[..., :-1].amax(-1)
    iou, queries = mask_agreement(eager, out_unmasked, scores, threshold=0.5)
    assert iou >= MASK_IOU_MIN and queries == 2 * 3  # no confident query in a random model: top 3 per image


@pytest.mark.parametrize("variant", SMALL_VARIANTS)
def test_small_segm_every_format_validates_with_masks(variant, small_segm, images_dir, tmp_path):
    fmt, options, post = SMALL_VARIANTS[variant]
    path = tmp_path / f"small{FORMATS[fmt].suffix}"
    result = export(small_segm, fmt, path, input_size=SMALL_CANVAS, batch_size=2, with_postprocess=post,
                    validate_images=images_dir, **options)
    report = result.validation
    stride = small_segm.mask_stride
    assert result.metadata.masks and result.metadata.mask_stride == stride in (2, 4)
    assert result.metadata.output_names[-1] == ("mask_probs" if post else "pred_masks")
    assert all(r.max_masks is not None and r.max_masks <= 1e-4 for r in report.rows)
    assert report.ok and report.min_mask_iou >= MASK_IOU_MIN
    assert "min mask IoU" in report.table()
    # a padded batch with a live mask, and the same images with an all-False mask: eager's masks differ, the
    # artifact follows each
    key = result.metadata.output_names[-1]
    runtime, eager = load_runtime(path), wrap(small_segm, with_postprocess=post)
    padded = example_inputs(batch_size=2, input_size=SMALL_CANVAS, with_postprocess=post, seed=5)
    unmasked = (padded[0], torch.zeros_like(padded[1]), *padded[2:])
    with torch.no_grad():
        ref = [dict(zip(result.metadata.output_names, eager(*inputs), strict=True)) for inputs in (padded, unmasked)]
    assert _max_diff(ref[0][key], ref[1][key]) > 1e-2
    for inputs, expected in zip((padded, unmasked), ref, strict=True):
        out = runtime(*inputs)
        assert tuple(out[key].shape) == (2, 5, SMALL_CANVAS[0] // stride, SMALL_CANVAS[1] // stride)
        assert all(_max_diff(out[name], expected[name]) <= 1e-4 for name in expected)


def test_dynamic_resnet_segm_masks_follow_the_input(segm_model, segm_expected, tmp_path):
    """torch.export with symbolic batch/height/width through the mask head's stride-4 maps and nearest
    upsampling: pred_masks' h, w follow each canvas, equal to eager."""
    path = tmp_path / "segm_dynamic.pt2"
    export(segm_model, "torch-export", path, input_size=(120, 128), batch_size=2, dynamic=True, validate=False)
    runtime = load_runtime(path)
    for batch, (h, w) in ((1, (96, 72)), (3, (136, 100))):
        images = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(h))
        mask = torch.zeros(batch, h, w, dtype=torch.bool)
        mask[-1, h // 2:, :] = True
        out = runtime(images, mask)
        with torch.no_grad():
            eager = dict(zip(RAW, wrap(segm_model)(images, mask), strict=True))
        assert tuple(out["pred_masks"].shape) == (batch, 6, -(-h // 4), -(-w // 4))
        assert all(_max_diff(out[key], eager[key]) <= 1e-4 for key in RAW)


def test_validation_fails_when_only_the_masks_differ(small_segm, images_dir, tmp_path):
    path = tmp_path / "small.onnx"
    export(small_segm, "onnx", path, input_size=SMALL_CANVAS, batch_size=1, validate=False, exporter="legacy",
           opset=17)
    other = build_model(SMALL_SEGM).eval()
    other.load_state_dict(small_segm.state_dict())
    with torch.no_grad():
        other.mask_head.out_lay.bias += 3.0  # every mask logit up by 3: boxes and classes untouched
    report = validate_artifact(other, path, images=images_dir, count=2, raise_on_failure=False)
    assert not report.ok
    assert all(r.max_logits <= 1e-4 and r.max_boxes <= 1e-4 for r in report.rows)
    assert all(r.max_masks > 1e-2 for r in report.rows)  # 3 over the masks' scale
    assert report.min_mask_iou < MASK_IOU_MIN


def test_mask_delta_is_relative_to_the_logits_scale():
    """A trained head's logits reach +-230 at 800 pixels: fp32 rounding of 3e-3 there is 1.4e-5 of the scale;
    probabilities and small logits compare absolutely."""
    from exporters.validate import mask_delta

    logits = torch.tensor([[[[-230.0, 0.5], [2.0, -1.0]]]])
    assert mask_delta({"pred_masks": logits}, {"pred_masks": logits + 3e-3}) == pytest.approx(3e-3 / 230, rel=1e-2)
    small = torch.tensor([[[[0.2, -0.5]]]])
    assert mask_delta({"pred_masks": small}, {"pred_masks": small + 3e-3}) == pytest.approx(3e-3, rel=1e-3)
    probs = torch.tensor([[[[0.9, 0.1]]]])
    assert mask_delta({"mask_probs": probs}, {"mask_probs": probs + 2e-4}) == pytest.approx(2e-4, rel=1e-3)


def test_mask_iou_and_confident_queries():
    ref = torch.zeros(2, 4, 4, dtype=torch.bool)
    ref[0, :2] = True  # 8 pixels
    out = ref.clone()
    out[0, 2, 0] = True  # one more: IoU 8/9; the second pair is empty on both sides: 1
    assert torch.allclose(mask_ious(ref, out), torch.tensor([8 / 9, 1.0], dtype=torch.float64))
    scores = torch.tensor([0.1, 0.9, 0.3, 0.7])
    assert confident_queries(scores, threshold=0.5).tolist() == [1, 3]
    assert confident_queries(scores, threshold=0.95, top_k=2).tolist() == [1, 3]
    assert sorted(confident_queries(scores, threshold=0.95).tolist()) == [1, 2, 3]


def test_metadata_of_a_detector_records_no_masks(small_segm, tmp_path):
    detector = dataclasses.replace(SMALL_SEGM, masks=False)
    result = export(build_model(detector).eval(), "torchscript", tmp_path / "det.ts", input_size=SMALL_CANVAS,
                    validate=False)
    assert (result.metadata.masks, result.metadata.mask_stride) == (False, 0)
    assert result.metadata.output_names == ("pred_logits", "pred_boxes")


def test_onnx_feature_mask_boundary(segm_model, tmp_path):
    """Padding that starts exactly on a nearest sample row (3 * 120 / 4 = 90): ONNX Resize would read row 89
    and miss it (logits 0.17 off); the mask is subsampled by explicit indices (detr.subsample_mask)."""
    path = tmp_path / "detector.onnx"
    export(segm_model.detr, "onnx", path, input_size=(120, 128), batch_size=1, validate=False, exporter="legacy",
           opset=17)
    images = torch.randn(1, 3, 120, 128, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 120, 128, dtype=torch.bool)
    mask[:, 90:] = True  # padding starts exactly on the nearest sample 3 * 120 / 4
    with torch.no_grad():
        eager = wrap(segm_model.detr)(images, mask)
    assert _max_diff(load_runtime(path)(images, mask)["pred_logits"], eager[0]) <= 1e-4


def test_cli_export_of_a_segmentation_checkpoint(small_segm, images_dir, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli
    from detr_core.checkpoint import model_payload, save_checkpoint
    from exporters import read_metadata

    checkpoint = save_checkpoint(tmp_path / "segm.pth", model_payload(small_segm, SMALL_SEGM))
    out = tmp_path / "segm.ts"
    result = CliRunner().invoke(cli, ["export", "--resume", str(checkpoint), "--format", "torchscript", "--input-size",
                                      "64x96", "--batch-size", "2", "--output", str(out), "--validate-images",
                                      str(images_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "min mask IoU 1.0000 (confident queries)" in result.output and "max Δ masks ÷ scale" in result.output
    meta = read_metadata(out)
    assert (meta.masks, meta.mask_stride, meta.output_names[-1]) == (True, small_segm.mask_stride, "pred_masks")
