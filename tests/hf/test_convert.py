"""``detrtool convert``: detrtool -> HF loads in transformers with no missing or unexpected keys and gives
detrtool's outputs (a panoptic model as ``DetrForSegmentation``, masks included); official and safetensors
round trips are exact (bit-identical tensors)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import DetrForObjectDetection, DetrForSegmentation

from cli.main import cli
from detr_core.checkpoint import load_checkpoint, model_payload, save_checkpoint
from detr_core.config import ModelConfig
from detr_core.models.segmentation import DETRsegm
from detr_core.registry import build_model
from tests.hf.models import (
    LABELS,
    detr_outputs,
    hf_config,
    hf_detr,
    hf_outputs,
    max_delta,
    padded_batch,
    save_hf,
)

SEGM = ("pred_logits", "pred_boxes", "pred_masks")


def convert(*args) -> None:
    result = CliRunner().invoke(cli, ["convert", *map(str, args)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote ")


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def named_checkpoint(tiny_checkpoint_path, tmp_path_factory):
    """The tiny reference checkpoint (4 heads) as a detrtool checkpoint with class names."""
    model = load_checkpoint(tiny_checkpoint_path, nheads=4)
    names = tuple(f"class-{i}" for i in range(model.config.num_classes))
    path = tmp_path_factory.mktemp("named") / "tiny.pth"
    save_checkpoint(path, model_payload(model, model.config.replace(class_names=names)))
    return path


@pytest.mark.parametrize("backbone", ["timm", "transformers"])
def test_to_hf_loads_in_transformers_with_detrtool_outputs(named_checkpoint, tmp_path, backbone):
    convert(named_checkpoint, "--to", "hf", "--output", tmp_path / "hf", "--hf-backbone", backbone)
    hf, info = DetrForObjectDetection.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"]["2"] == "class-2" and config["encoder_attention_heads"] == 4
    images, mask = padded_batch()
    ours = detr_outputs(load_checkpoint(named_checkpoint), images, mask)
    assert max_delta(hf_outputs(hf.eval(), images, mask), ours) <= 1e-4


def test_hf_official_hf_round_trip_is_bit_identical(hf_folder, tmp_path):
    convert(hf_folder, "--to", "official", "--output", tmp_path / "official.pth")
    payload = torch.load(tmp_path / "official.pth", weights_only=True)
    assert list(payload) == ["model"]
    assert_same_tensors(load_checkpoint(tmp_path / "official.pth", nheads=4).state_dict(),
                        load_checkpoint(hf_folder).state_dict())
    convert(tmp_path / "official.pth", "--nheads", 4, "--to", "hf", "--output", tmp_path / "back")
    assert_same_tensors(load_file(tmp_path / "back" / "model.safetensors"), load_file(hf_folder / "model.safetensors"))


def test_official_key_set_is_the_reference_one(reference_dir, tmp_path):
    """An HF DETR-R50 (COCO's 91 labels, 100 queries, 6+6 layers; small widths) converted to official has
    exactly the keys of the official detr-r50 checkpoints, and their backbone shapes."""
    reference = json.loads((reference_dir / "detr_resnet50_state_dict_keys.json").read_text())
    labels = tuple(f"c{i}" for i in range(91))
    hf = hf_detr(hf_config(backbone="resnet50", layers=6, d_model=32, queries=100, labels=labels))
    convert(save_hf(hf, tmp_path / "hf"), "--to", "official", "--output", tmp_path / "r50.pth")
    state = torch.load(tmp_path / "r50.pth", weights_only=True)["model"]
    assert sorted(state) == sorted(reference)
    assert all(list(state[k].shape) == reference[k] for k in reference if k.startswith("backbone."))
    assert state["class_embed.weight"].shape[0] == 92 and state["query_embed.weight"].shape[0] == 100


def test_pre_norm_model_round_trips_through_safetensors_and_official(tmp_path):
    """What HF DETR cannot express (pre-norm) keeps every tensor and the whole config in --to safetensors."""
    config = ModelConfig(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=48,
                         num_queries=5, num_classes=3, pre_norm=True, position_embedding="learned", class_names=LABELS)
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_checkpoint(tmp_path / "ckpt.pth", model_payload(model, config))
    convert(tmp_path / "ckpt.pth", "--to", "safetensors", "--output", tmp_path / "st" / "model.safetensors")
    loaded = load_checkpoint(tmp_path / "st" / "model.safetensors")
    assert loaded.config == config
    assert_same_tensors(loaded.state_dict(), model.state_dict())
    convert(tmp_path / "st" / "model.safetensors", "--to", "official", "--output", tmp_path / "official.pth")
    assert_same_tensors(load_checkpoint(tmp_path / "official.pth", nheads=2).state_dict(), model.state_dict())


def test_official_panoptic_to_hf_is_a_detr_for_segmentation_and_round_trips(segm_checkpoint_path, segm_expected,
                                                                            tmp_path):
    """official panoptic -> hf: a DetrForSegmentation transformers loads with no missing or unexpected keys and
    the reference's logits, boxes and masks on its padded batch; -> official again: the source's tensors, bit for
    bit (as --to official and --to safetensors straight from the source)."""
    convert(segm_checkpoint_path, "--nheads", 8, "--to", "hf", "--output", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["DetrForSegmentation"] and config["detrtool_stuff_classes"] == []
    hf, info = DetrForSegmentation.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    got = hf_outputs(hf.eval(), segm_expected["padded"], segm_expected["mask"])
    assert max_delta(got, segm_expected["outputs"], SEGM) <= 1e-4
    source = torch.load(segm_checkpoint_path, weights_only=True)["model"]
    convert(tmp_path / "hf", "--to", "official", "--output", tmp_path / "back.pth")
    assert_same_tensors(torch.load(tmp_path / "back.pth", weights_only=True)["model"], source)
    convert(segm_checkpoint_path, "--nheads", 8, "--to", "official", "--output", tmp_path / "official.pth")
    assert_same_tensors(torch.load(tmp_path / "official.pth", weights_only=True)["model"], source)
    convert(segm_checkpoint_path, "--nheads", 8, "--to", "safetensors", "--output", tmp_path / "st" / "m.safetensors")
    assert_same_tensors(load_checkpoint(tmp_path / "st" / "m.safetensors").state_dict(),
                        load_checkpoint(segm_checkpoint_path, nheads=8).state_dict())


def test_hf_segmentation_official_hf_round_trip_is_bit_identical(hf_segm_folder, tmp_path):
    convert(hf_segm_folder, "--to", "official", "--output", tmp_path / "official.pth")
    official = load_checkpoint(tmp_path / "official.pth", nheads=8)
    assert isinstance(official, DETRsegm)
    assert_same_tensors(official.state_dict(), load_checkpoint(hf_segm_folder).state_dict())
    convert(tmp_path / "official.pth", "--nheads", 8, "--to", "hf", "--output", tmp_path / "back")
    assert_same_tensors(load_file(tmp_path / "back" / "model.safetensors"),
                        load_file(hf_segm_folder / "model.safetensors"))


def test_segmentation_checkpoint_to_hf_transformers_backbone_keeps_names_and_stuff(segm_checkpoint_path,
                                                                                   segm_expected, tmp_path):
    """A detrtool panoptic checkpoint (class names, stuff ids 6..12) -> hf with transformers' ResNet: its four
    stages feed the mask head, the outputs are the reference's, and the folder loads back with the same config
    (stuff ids from ``detrtool_stuff_classes``, nothing assumed) and tensors."""
    model = load_checkpoint(segm_checkpoint_path, nheads=8)
    config = model.config.replace(class_names=tuple(f"c{i}" for i in range(12)), stuff_classes=tuple(range(6, 13)))
    save_checkpoint(tmp_path / "segm.pth", model_payload(model, config))
    convert(tmp_path / "segm.pth", "--to", "hf", "--hf-backbone", "transformers", "--output", tmp_path / "hf")
    hf, info = DetrForSegmentation.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    got = hf_outputs(hf.eval(), segm_expected["padded"], segm_expected["mask"])
    assert max_delta(got, segm_expected["outputs"], SEGM) <= 1e-4
    loaded = load_checkpoint(tmp_path / "hf")
    assert loaded.config == config and loaded.assumed_config == {}
    assert_same_tensors(loaded.state_dict(), model.state_dict())
