"""Every registered model builds with exactly the official state-dict keys and shapes."""

from __future__ import annotations

import json

import pytest
import torch

from detr_core import ModelConfig, build_model, get_model, list_models

OFFICIAL_KEY_LISTS = {
    "detr_resnet50": "detr_resnet50_state_dict_keys.json",
    "detr_resnet50_dc5": "detr_resnet50_state_dict_keys.json",
    "detr_resnet101": "detr_resnet101_state_dict_keys.json",
    "detr_resnet101_dc5": "detr_resnet101_state_dict_keys.json",
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_KEY_LISTS))
def test_registered_model_has_the_official_keys_and_shapes(name, reference_dir):
    expected = json.loads((reference_dir / OFFICIAL_KEY_LISTS[name]).read_text())
    state = get_model(name, num_classes=91).state_dict()
    assert sorted(state) == sorted(expected)
    wrong = {k: (list(state[k].shape), shape) for k, shape in expected.items() if list(state[k].shape) != shape}
    assert not wrong


def test_every_official_name_is_registered():
    assert set(OFFICIAL_KEY_LISTS) <= set(list_models())


def test_dc5_dilates_the_last_stage():
    model = get_model("detr_resnet50_dc5")
    assert model.backbone.stride == 16
    with torch.no_grad():
        features = model.backbone[0](torch.zeros(1, 3, 64, 64))
    assert features.shape[-2:] == (4, 4)


def test_tiny_config_has_the_tiny_reference_keys(reference_dir):
    expected = json.loads((reference_dir / "tiny_state_dict_keys.json").read_text())
    config = ModelConfig(backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=2, dec_layers=2,
                         dim_feedforward=128, num_queries=12, num_classes=7)
    state = build_model(config).state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected


def test_only_layer2_to_4_of_the_backbone_train():
    model = get_model("detr_resnet50")
    trainable = {n.split(".")[2] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}


def test_unknown_model_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered models"):
        get_model("detr_resnet9000")
