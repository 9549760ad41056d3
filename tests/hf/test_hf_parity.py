"""HF -> detrtool: ``load_checkpoint`` on a Hugging Face DETR folder (or its .safetensors) gives
transformers' outputs within 1e-4 on a padded batch of 2 with masks, and takes the architecture and the
class names from config.json."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DetrForObjectDetection

from detr_core.checkpoint import load_checkpoint
from detr_core.hf.files import read_hf_checkpoint
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

TOLERANCE = 1e-4
CONFIGS = {
    "timm-r18": dict(backbone="resnet18", timm=True),
    "transformers-r18": dict(backbone="resnet18", timm=False),
    "transformers-r50": dict(backbone="resnet50", timm=False, layers=1),
    "timm-r50-dc5": dict(backbone="resnet50", timm=True, dilation=True, layers=1),
    "timm-r18-learned": dict(backbone="resnet18", timm=True, position="learned"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_outputs_equal_transformers(name, tmp_path):
    kwargs = CONFIGS[name]
    hf = hf_detr(hf_config(**kwargs))
    folder = save_hf(hf, tmp_path / name)
    images, mask = padded_batch()
    expected = hf_outputs(hf, images, mask)
    model = load_checkpoint(folder)
    assert max_delta(detr_outputs(model, images, mask), expected) <= TOLERANCE
    eager = DetrForObjectDetection.from_pretrained(folder, attn_implementation="eager").eval()  # not SDPA
    assert max_delta(detr_outputs(model, images, mask), hf_outputs(eager, images, mask)) <= TOLERANCE
    assert max_delta(detr_outputs(model, images, None), expected) > 1e-2  # the padding mask is live here
    config = model.config
    assert (config.backbone, config.dilation, config.position_embedding) == (
        kwargs["backbone"], kwargs.get("dilation", False), kwargs.get("position", "sine"))
    assert (config.nheads, config.num_queries, config.num_classes, config.class_names) == (4, 7, 3, LABELS)


def test_safetensors_file_with_and_without_config(hf_folder, tmp_path, caplog):
    hf = hf_detr(hf_config())  # hf_folder's model: same config and seed
    images, mask = padded_batch()
    expected = hf_outputs(hf, images, mask)
    beside = load_checkpoint(hf_folder / "model.safetensors")  # config.json beside it is read
    assert beside.config.nheads == 4 and beside.config.class_names == LABELS
    assert max_delta(detr_outputs(beside, images, mask), expected) <= TOLERANCE
    alone = tmp_path / "weights.safetensors"
    shutil.copy(hf_folder / "model.safetensors", alone)
    with caplog.at_level("WARNING"):
        inferred = load_checkpoint(alone, nheads=4)  # no config: inferred like an official state dict
    assert inferred.config.num_queries == 7 and inferred.config.class_names == ()
    assert max_delta(detr_outputs(inferred, images, mask), expected) <= TOLERANCE
    with caplog.at_level("WARNING"):
        load_checkpoint(alone)
    assert "nheads" in caplog.text


def test_pytorch_model_bin_and_in_memory_key_names(hf_folder, tmp_path):
    """A folder with pytorch_model.bin (read weights-only), and weights saved under transformers 5's in-memory
    names (``backbone.model``, ``o_proj``, ``mlp.fc1``) give the same tensors as the Hub layout."""
    reference = read_hf_checkpoint(hf_folder)["model"]
    legacy = tmp_path / "bin"
    legacy.mkdir()
    shutil.copy(hf_folder / "config.json", legacy / "config.json")
    torch.save(load_file(hf_folder / "model.safetensors"), legacy / "pytorch_model.bin")
    in_memory = tmp_path / "in-memory"
    in_memory.mkdir()
    shutil.copy(hf_folder / "config.json", in_memory / "config.json")
    save_file({k: v.contiguous() for k, v in hf_detr(hf_config()).state_dict().items()},
              in_memory / "model.safetensors", metadata={"format": "pt"})
    assert any(".o_proj." in k for k in load_file(in_memory / "model.safetensors"))
    for folder in (legacy, in_memory):
        state = read_hf_checkpoint(folder)["model"]
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
