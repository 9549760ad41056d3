"""HF ``DetrForSegmentation`` <-> detrtool ``DETRsegm``: a Hugging Face panoptic folder loads with its mask head
and gives transformers' logits, boxes and masks within 1e-4 (padded batch and single image); transformers 5's
in-memory names read as the Hub's; the stuff ids come from config.json or COCO panoptic's 250-class rule."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cli.main import cli
from detr_core.checkpoint import COCO_PANOPTIC_STUFF, load_checkpoint
from detr_core.hf.files import read_hf_checkpoint
from detr_core.models.detr import DETR
from detr_core.models.segmentation import DETRsegm
from tests.hf.models import (
    LABELS,
    detr_outputs,
    hf_outputs,
    hf_segmentation,
    max_delta,
    padded_batch,
    save_hf,
    segmentation_config,
)

TOLERANCE = 1e-4
SEGM = ("pred_logits", "pred_boxes", "pred_masks")
CONFIGS = {"timm-r18": dict(timm=True), "transformers-r18": dict(timm=False)}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_segmentation_outputs_equal_transformers(name, tmp_path):
    """Masks are compared over the whole padded canvas: both models define them there the same way (the
    attention maps are 0 on padding — transformers adds finfo.min, detrtool fills -inf — and the mask head
    convolves the whole canvas), so nothing needs excluding."""
    hf = hf_segmentation(segmentation_config(**CONFIGS[name]))
    model = load_checkpoint(save_hf(hf, tmp_path / name))
    assert isinstance(model, DETRsegm) and model.config.masks
    assert (model.config.nheads, model.config.class_names, model.config.stuff_classes) == (8, LABELS, ())
    images, mask = padded_batch()
    expected, got = hf_outputs(hf, images, mask), detr_outputs(model, images, mask)
    assert got["pred_masks"].shape == expected["pred_masks"].shape == (2, 5, 32, 32)  # stride 4 of 128x128
    assert max_delta(got, expected, SEGM) <= TOLERANCE
    assert max_delta(detr_outputs(model, images, None), expected, ("pred_masks",)) > 1e-2  # padding is live
    single = images[:1, :, :, :64]  # image 0 alone at its own size (128x64), no padding
    no_padding = torch.zeros(1, 128, 64, dtype=torch.bool)
    assert max_delta(detr_outputs(model, single, None), hf_outputs(hf, single, no_padding), SEGM) <= TOLERANCE


def test_in_memory_names_and_pytorch_model_bin(hf_segm_folder, tmp_path):
    """transformers 5's in-memory names (``mask_head.fpn_stages.{i}.refine.conv``, ``bbox_attention.q_proj``,
    ``backbone.model`` ...) and a pytorch_model.bin give the tensors of the Hub layout (``lay3``, ``q_linear``)."""
    reference = read_hf_checkpoint(hf_segm_folder)["model"]
    assert {"mask_head.lay3.weight", "bbox_attention.q_linear.bias", "detr.query_embed.weight"} <= set(reference)
    in_memory, legacy = tmp_path / "in-memory", tmp_path / "bin"
    for folder in (in_memory, legacy):
        folder.mkdir()
        shutil.copy(hf_segm_folder / "config.json", folder / "config.json")
    state = {k: v.contiguous() for k, v in hf_segmentation(segmentation_config()).state_dict().items()}
    assert {"mask_head.fpn_stages.0.refine.conv.weight", "bbox_attention.q_proj.weight"} <= set(state)
    save_file(state, in_memory / "model.safetensors", metadata={"format": "pt"})
    torch.save(load_file(hf_segm_folder / "model.safetensors"), legacy / "pytorch_model.bin")
    for folder in (in_memory, legacy):
        loaded = read_hf_checkpoint(folder)["model"]
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), folder.name


def test_sharded_folder_gives_the_same_tensors(hf_segm_folder, tmp_path):
    """A ``model.safetensors.index.json`` folder (the mask head in a shard of its own) reads as the one-file
    folder, tensor for tensor; a shard named as a path leaving the folder is refused (the red-team rows)."""
    from tests.cli.test_bad_inputs_redteam_segm import shard_mask_head

    reference = read_hf_checkpoint(hf_segm_folder)["model"]
    sharded = shutil.copytree(hf_segm_folder, tmp_path / "sharded")
    shard_mask_head(sharded, "b.safetensors")
    assert not (sharded / "model.safetensors").exists()
    loaded = read_hf_checkpoint(sharded)["model"]
    assert loaded.keys() == reference.keys() and len(load_file(sharded / "b.safetensors")) > 10
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_masks_false_gives_the_detector(hf_segm_folder):
    hf = hf_segmentation(segmentation_config())  # hf_segm_folder's model: same config and seed
    detector = load_checkpoint(hf_segm_folder, masks=False)
    assert type(detector) is DETR
    images, mask = padded_batch()
    assert max_delta(detr_outputs(detector, images, mask), hf_outputs(hf, images, mask)) <= TOLERANCE


def test_official_panoptic_key_set_and_coco_stuff_assumption(reference_dir, tmp_path, caplog):
    """An HF DETR-R50 panoptic (250 labels, 100 queries, 6+6 layers; small widths) converted to official has
    exactly the keys of detr-r50-panoptic, its backbone shapes and its mask head's FPN input widths; with no stuff
    ids in config.json, 250 classes are COCO panoptic's (ids >= 92 stuff), logged and reported as assumed."""
    reference = json.loads((reference_dir / "detr_resnet50_panoptic_state_dict_keys.json").read_text())
    labels = tuple(f"c{i}" for i in range(250))
    hf = hf_segmentation(segmentation_config(backbone="resnet50", layers=6, queries=100, labels=labels))
    folder = save_hf(hf, tmp_path / "hf")
    result = CliRunner().invoke(cli, ["convert", str(folder), "--to", "official", "--output", str(tmp_path / "p.pth")])
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "p.pth", weights_only=True)["model"]
    assert sorted(state) == sorted(reference)
    fixed = [k for k in reference if k.startswith("detr.backbone.")]
    assert all(list(state[k].shape) == reference[k] for k in fixed)
    assert [state[f"mask_head.adapter{i}.weight"].shape[1] for i in (1, 2, 3)] == [1024, 512, 256]
    with caplog.at_level("INFO"):
        model = load_checkpoint(folder)
    assert model.config.stuff_classes == COCO_PANOPTIC_STUFF and model.config.num_classes == 250
    assert model.assumed_config == {"stuff_classes": "92..250"} and "ids >= 92 are stuff" in caplog.text


def test_bare_safetensors_in_hf_and_official_panoptic_layouts(hf_segm_folder, tmp_path):
    """Without a config.json, a DetrForSegmentation's weights and an official panoptic state dict saved as
    .safetensors (keys under ``detr.`` too, but official names) both load as the DETRsegm they hold."""
    reference = load_checkpoint(hf_segm_folder).state_dict()
    shutil.copy(hf_segm_folder / "model.safetensors", tmp_path / "hf.safetensors")
    save_file({k: v.contiguous() for k, v in reference.items()}, tmp_path / "official.safetensors")
    for name in ("hf.safetensors", "official.safetensors"):
        model = load_checkpoint(tmp_path / name, nheads=8)
        assert isinstance(model, DETRsegm) and model.config.stuff_classes == ()
        assert all(torch.equal(model.state_dict()[k], reference[k]) for k in reference), name
