"""DETRsegm against the reference's tiny panoptic fixtures (segm_tiny_*), and its checkpoint layouts."""

from __future__ import annotations

import json

import pytest
import torch

from detr_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from detr_core.config import ModelConfig
from detr_core.models.segmentation import DETRsegm
from detr_core.registry import build_model, get_model
from tests.conftest import reference_path

OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks")


@pytest.fixture(scope="module")
def segm_model(segm_checkpoint_path):
    return load_checkpoint(segm_checkpoint_path, nheads=8)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def test_official_panoptic_checkpoint_loads_as_detrsegm(segm_model):
    assert isinstance(segm_model, DETRsegm)
    assert segm_model.config.masks and segm_model.mask_stride == 4
    assert (segm_model.num_classes, segm_model.num_queries) == (12, 6)


def test_padded_batch_outputs_match_the_reference(segm_model, segm_expected):
    with torch.no_grad():
        out = segm_model(segm_expected["padded"], segm_expected["mask"])
    expected = segm_expected["outputs"]
    for key in OUTPUTS:
        assert _max_diff(out[key], expected[key]) < 1e-4, key
    for got, ref in zip(out["aux_outputs"], expected["aux_outputs"], strict=True):
        for key in ("pred_logits", "pred_boxes"):
            assert _max_diff(got[key], ref[key]) < 1e-4, key


def test_single_image_outputs_match_the_reference(segm_model, segm_expected):
    with torch.no_grad():
        out = segm_model(segm_expected["images"][0][None])
    for key in OUTPUTS:
        assert _max_diff(out[key], segm_expected["single_outputs"][key]) < 1e-4, key
    assert out["pred_masks"].shape[-2:] == (24, 32)  # stride 4 of 96 x 128


def test_mask_head_alone_matches_the_reference(segm_model, segm_expected):
    inputs = segm_expected["mask_head_inputs"]
    with torch.no_grad():
        attention = segm_model.bbox_attention(inputs["hs_last"], inputs["memory"], inputs["feature_mask"])
        masks = segm_model.mask_head(inputs["src_proj"], inputs["bbox_mask"], inputs["fpns"])
    assert _max_diff(attention, inputs["bbox_mask"]) < 1e-5
    assert _max_diff(masks.reshape(2, 6, 30, 32), segm_expected["outputs"]["pred_masks"]) < 1e-5


def test_the_mask_head_reads_what_the_reference_fed_it(segm_model, segm_expected):
    inputs = segm_expected["mask_head_inputs"]
    with torch.no_grad():
        states, memory, features, feature_mask, fpns = segm_model.encode(segm_expected["padded"],
                                                                          segm_expected["mask"])
    assert torch.equal(feature_mask, inputs["feature_mask"])
    assert _max_diff(states[-1], inputs["hs_last"]) < 1e-4
    for got, ref in zip([memory, features, *fpns], [inputs["memory"], inputs["src_proj"], *inputs["fpns"]], strict=True):
        assert _max_diff(got, ref) / ref.abs().max().item() < 1e-4


def test_head_weights_are_the_fixtures(segm_model, segm_expected):
    own = segm_model.state_dict()
    for key, value in segm_expected["head_state_dict"].items():
        assert torch.equal(own[key], value), key


def test_r50_panoptic_has_the_official_keys_and_shapes():
    official = json.loads(reference_path("detr_resnet50_panoptic_state_dict_keys.json").read_text())
    model = get_model("detr_resnet50_panoptic")
    ours = {k: list(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    official = {k: list(v) for k, v in official.items() if not k.endswith("num_batches_tracked")}
    assert ours == official


def test_a_detector_checkpoint_starts_a_segmentation_model(tmp_path, tiny_checkpoint_path):
    config = ModelConfig(backbone="resnet18", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=5, num_classes=4)
    detector = build_model(config)
    path = save_checkpoint(tmp_path / "det.pth", {"model": detector.state_dict(),
                                                  "config": {"model": {**vars(config), "class_names": []}}})
    segm = load_checkpoint(path, masks=True)
    assert isinstance(segm, DETRsegm)
    for key, value in detector.state_dict().items():
        assert torch.equal(segm.state_dict()[f"detr.{key}"], value), key
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        det_out, segm_out = detector.eval()(images), segm(images)
    assert torch.equal(det_out["pred_logits"], segm_out["pred_logits"])
    assert segm_out["pred_masks"].shape == (1, 5, 16, 24)


def test_a_panoptic_checkpoint_loads_as_its_detector(segm_checkpoint_path, segm_model, segm_expected):
    detector = load_checkpoint(segm_checkpoint_path, nheads=8, masks=False)
    assert not isinstance(detector, DETRsegm)
    with torch.no_grad():
        det = detector(segm_expected["padded"], segm_expected["mask"])
        segm = segm_model(segm_expected["padded"], segm_expected["mask"])
    assert torch.equal(det["pred_logits"], segm["pred_logits"])


def test_a_detrtool_segmentation_checkpoint_round_trips(tmp_path, segm_model):
    from detr_core.checkpoint import model_payload

    path = save_checkpoint(tmp_path / "segm.pth", model_payload(segm_model, segm_model.config))
    again = load_checkpoint(path)
    assert isinstance(again, DETRsegm) and again.config.masks
    for key, value in segm_model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_small_cnn_masks_come_at_stride_4():
    config = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=3, num_classes=2, masks=True)
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 80), torch.zeros(2, 64, 80, dtype=torch.bool))
    assert model.mask_stride == 4 and out["pred_masks"].shape == (2, 3, 16, 20)


def test_freeze_detr_trains_only_the_mask_head():
    config = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=3, num_classes=2, masks=True)
    model = build_model(config, freeze_detr=True)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"bbox_attention", "mask_head"}


@pytest.mark.parametrize(("hidden_dim", "nheads"), [(64, 4), (256, 4)])
def test_mask_head_dims_are_checked_with_one_line(tmp_path, hidden_dim, nheads):
    config = ModelConfig(backbone="small_cnn", hidden_dim=hidden_dim, nheads=nheads, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=3, num_classes=2)
    path = save_checkpoint(tmp_path / "det.pth", {"model": build_model(config).state_dict(),
                                                  "config": {"model": {**vars(config), "class_names": []}}})
    with pytest.raises(CheckpointError, match=r"det.pth: the mask head needs hidden_dim a multiple of 128"):
        load_checkpoint(path, masks=True)


def test_the_mask_predictor_equals_the_full_masks_values_and_gradients(segm_model, segm_expected):
    """Training computes only the matched queries' masks (MaskPredictor): same values and gradients."""
    from detr_core.models.segmentation import MaskPredictor

    model = segm_model
    batch_idx, query_idx = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([5, 1, 0, 3, 2])
    weights = torch.rand(5, 30, 32, generator=torch.Generator().manual_seed(0))

    def grads(masks_of) -> tuple[torch.Tensor, dict]:
        model.zero_grad()
        states, memory, features, feature_mask, fpns = model.encode(segm_expected["padded"], segm_expected["mask"])
        masks = masks_of(states, memory, features, feature_mask, fpns)
        (masks * weights).sum().backward()
        return masks.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full, full_grads = grads(lambda *a: model.predict_masks(a[0][-1], *a[1:])[batch_idx, query_idx])
    some, some_grads = grads(lambda *a: MaskPredictor(model, a[0][-1], *a[1:])(batch_idx, query_idx))
    assert _max_diff(some, full) < 1e-5
    assert set(some_grads) == set(full_grads)
    scale = max(g.abs().max().item() for g in full_grads.values())
    worst = {name: _max_diff(some_grads[name], grad) / max(grad.abs().max().item(), 1e-3 * scale)
             for name, grad in full_grads.items()}  # conv biases before GroupNorm get ~0: float noise
    assert max(worst.values()) < 1e-4, max(worst.items(), key=lambda kv: kv[1])
    model.zero_grad()


def test_mask_predictor_gradients_are_bit_identical_run_to_run():
    """Two threads sum the gradient of an image's gathered maps in a fixed order (index_select): a mask
    training step is reproducible (``x[rows]``'s index_put_ accumulation differed by ~1e-7 from run to run)."""
    config = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=8, num_classes=2, masks=True)
    model = build_model(config).train()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    batch_idx, query_idx = torch.arange(3).repeat_interleave(8), torch.arange(8).repeat(3)
    weights = torch.rand(24, 16, 16, generator=torch.Generator().manual_seed(2))

    def grads() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # the same dropout
        model.zero_grad()
        (model(images)["mask_predictor"](batch_idx, query_idx) * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [grads() for _ in range(8)]
    finally:
        torch.set_num_threads(threads)
    differing = sorted({name for run in runs[1:] for name, grad in run.items() if not torch.equal(grad, runs[0][name])})
    assert not differing, differing


def test_training_forward_hands_the_loss_a_mask_predictor():
    config = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=3, num_classes=2, masks=True)
    model = build_model(config).train()
    out = model(torch.rand(2, 3, 64, 64))
    assert "pred_masks" not in out
    masks = out["mask_predictor"](torch.tensor([1]), torch.tensor([2]))
    assert masks.shape == (1, 16, 16) and masks.requires_grad
    empty = out["mask_predictor"](torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    assert empty.shape == (0, 16, 16) and empty.requires_grad
    assert "pred_masks" in model.eval()(torch.rand(1, 3, 64, 64))


def test_an_official_250_class_panoptic_checkpoint_gets_cocos_stuff_ids(tmp_path):
    config = ModelConfig(backbone="resnet18", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=3, num_classes=250, masks=True)
    path = save_checkpoint(tmp_path / "official.pth", {"model": build_model(config).state_dict()})
    model = load_checkpoint(path, nheads=8)
    is_thing = model.config.is_thing()
    assert [c for c in (1, 90, 91) if not is_thing[c]] == [] and not is_thing[92] and not is_thing[200]
    assert model.assumed_config["stuff_classes"] == "92..250"
    assert load_checkpoint(path, nheads=8, stuff_classes=(5,)).config.stuff_classes == (5,)
