"""Checkpoint loading: official files, architecture inference, fine-tuning heads, clear errors."""

from __future__ import annotations

import logging

import pytest
import torch

from detr_core import (
    CheckpointError,
    ModelConfig,
    build_model,
    infer_config,
    load_checkpoint,
    save_checkpoint,
)
from detr_core.checkpoint import model_payload, read_checkpoint


def test_tiny_reference_checkpoint_loads_strictly_and_infers_its_config(tiny_checkpoint_path, tiny_expected):
    model = load_checkpoint(tiny_checkpoint_path, nheads=4)
    assert not model.training
    want = tiny_expected["config"]
    config = model.config
    for key in ("backbone", "hidden_dim", "nheads", "enc_layers", "dec_layers", "dim_feedforward",
                "num_queries", "num_classes", "pre_norm", "position_embedding", "dilation"):
        assert getattr(config, key) == want[key], key
    state = torch.load(tiny_checkpoint_path, weights_only=True)["model"]
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected


@pytest.mark.parametrize("variant", [
    dict(backbone="resnet34", pre_norm=True, position_embedding="learned", hidden_dim=32, nheads=2,
         enc_layers=1, dec_layers=3, dim_feedforward=48, num_queries=5, num_classes=3),
    dict(backbone="resnet50", hidden_dim=32, nheads=2, enc_layers=3, dec_layers=1, dim_feedforward=40,
         num_queries=7, num_classes=20),
])
def test_architecture_is_inferred_from_an_official_state_dict(tmp_path, variant):
    config = ModelConfig(**variant)
    model = build_model(config).eval()
    path = tmp_path / "official.pth"
    torch.save({"model": model.state_dict()}, path)
    assert infer_config(model.state_dict()).replace(nheads=config.nheads) == config
    loaded = load_checkpoint(path, nheads=config.nheads)
    images = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(loaded(images)["pred_logits"], model(images)["pred_logits"])


def test_detrtool_checkpoint_carries_its_config(tmp_path):
    config = ModelConfig(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=4, num_classes=2, class_names=("cat", "dog"))
    model = build_model(config)
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pth", model_payload(model, config, epoch=3))
    loaded = load_checkpoint(path)
    assert loaded.config == config
    assert read_checkpoint(path)["epoch"] == 3


def test_other_num_classes_drops_the_class_head_in_one_log_line(tiny_checkpoint_path, caplog):
    with caplog.at_level(logging.INFO, logger="detr_core.checkpoint"):
        model = load_checkpoint(tiny_checkpoint_path, nheads=4, num_classes=3)
    assert model.class_embed.out_features == 4
    lines = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(lines) == 1 and "class_embed.weight" in lines[0]
    reference = torch.load(tiny_checkpoint_path, weights_only=True)["model"]
    assert torch.equal(model.state_dict()["query_embed.weight"], reference["query_embed.weight"])


def test_panoptic_checkpoint_loads_its_detector(tmp_path, tiny_checkpoint_path):
    state = torch.load(tiny_checkpoint_path, weights_only=True)["model"]
    panoptic = {f"detr.{k}": v for k, v in state.items()}
    panoptic["mask_head.lay1.weight"] = torch.zeros(3, 3)
    path = tmp_path / "panoptic.pth"
    torch.save({"model": panoptic}, path)
    assert load_checkpoint(path, nheads=4, masks=False).num_classes == 7
    with pytest.raises(CheckpointError, match=r"panoptic.pth: the mask head needs hidden_dim a multiple of 128"):
        load_checkpoint(path, nheads=4)  # as a panoptic model: this detector cannot carry a mask head


def test_random_file_is_one_clear_error(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match=r"random\.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_non_detr_dict_is_one_clear_error(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match=r"not a DETR state dict, missing keys \['input_proj.weight'"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a DETR checkpoint"):
        load_checkpoint(path)


def test_wrong_shape_names_the_key(tmp_path, tiny_checkpoint_path):
    state = torch.load(tiny_checkpoint_path, weights_only=True)["model"]
    state["bbox_embed.layers.1.weight"] = torch.zeros(64, 32)
    path = tmp_path / "bad_shape.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch \['bbox_embed.layers.1.weight \[64, 32\] vs model \[64, 64\]"):
        load_checkpoint(path, nheads=4)


def test_missing_keys_are_named(tmp_path, tiny_checkpoint_path):
    state = torch.load(tiny_checkpoint_path, weights_only=True)["model"]
    del state["transformer.decoder.norm.weight"]
    path = tmp_path / "missing.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"missing keys \['transformer.decoder.norm.weight'\]"):
        load_checkpoint(path, nheads=4)


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pth")


class _Payload:
    """A class a weights-only load must refuse to instantiate."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"model": {}, "obj": _Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(path)


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt.pth", {"model": {"w": torch.ones(2)}})

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
