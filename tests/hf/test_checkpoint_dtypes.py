"""A tensor whose dtype class differs from the model's is refused, never cast: the red team's safetensors
header rewritten ``F32`` -> ``I32`` over the same bytes (``predict --resume`` used to exit 0 with every box
``[0, 32, 0, 64]``), integer / bool tensors into float parameters and a float ``num_batches_tracked`` in
detrtool and official ``.pth`` checkpoints; fp16 / bf16 weights still load (a change of precision only)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from detr_core import CheckpointError, load_checkpoint
from detr_core.checkpoint import model_payload, save_checkpoint
from detr_core.config import ModelConfig
from detr_core.registry import build_model
from tests.cli.bad_input import check_bad_input

KEY = "bbox_predictor.layers.0.bias"
SMALL = ModelConfig(backbone="small_cnn", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=32,
                    num_queries=3, num_classes=2)


def retype_safetensors(path: Path, key: str, dtype: str) -> Path:
    """Rewrite ``key``'s dtype in the safetensors header (same byte size, data untouched): the red team's edit."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    header[key]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (size - len(text))
    assert len(text) == size
    path.write_bytes(data[:8] + text + data[8 + size:])
    return path


@pytest.fixture
def retyped_folder(hf_folder, tmp_path) -> Path:
    folder = Path(shutil.copytree(hf_folder, tmp_path / "dtype-i32"))
    retype_safetensors(folder / "model.safetensors", KEY, "I32")
    return folder


def test_retyped_header_is_refused_by_predict_and_convert(retyped_folder, hf_folder, tmp_path):
    from safetensors.torch import load_file

    assert load_file(retyped_folder / "model.safetensors")[KEY].dtype == torch.int32  # the edit is what we think
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 48), (20, 120, 200)).save(images / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"earlier")
    names = ["dtype-i32/model.safetensors", KEY, "int32"]
    check_bad_input(["predict", images, "--resume", retyped_folder, "--output-dir", out], names=names,
                    protect=[out, retyped_folder])
    check_bad_input(["convert", retyped_folder, "--to", "official", "--output", tmp_path / "o.pth"], names=names,
                    protect=[retyped_folder])
    assert not (tmp_path / "o.pth").exists()


R18 = SMALL.replace(backbone="resnet18")


def _saved(tmp_path: Path, edit, *, official: bool = False) -> Path:
    """A detrtool checkpoint of the small model (official: a ``{"model": state}`` ResNet-18 one) after
    ``edit(state)``."""
    config = R18 if official else SMALL
    torch.manual_seed(0)
    payload = model_payload(build_model(config), config)
    edit(payload["model"])
    return save_checkpoint(tmp_path / "edited.pth", {"model": payload["model"]} if official else payload)


@pytest.mark.parametrize("key, value, official, dtype", [
    ("bbox_embed.layers.0.bias", lambda t: t.view(torch.int32), False, "int32"),
    ("class_embed.weight", lambda t: t > 0, False, "bool"),
    ("input_proj.weight", lambda t: t.to(torch.int64), True, "int64"),
    ("backbone.0.body.stages.0.1.num_batches_tracked", lambda t: t.float(), False, "float32"),
])
def test_other_dtype_class_is_a_checkpoint_error(tmp_path, key, value, official, dtype):
    path = _saved(tmp_path, lambda state: state.__setitem__(key, value(state[key])), official=official)
    with pytest.raises(CheckpointError, match=f"edited.pth: tensor {key} is {dtype} where the model holds"):
        load_checkpoint(path, **({"nheads": 2} if official else {}))


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_lower_float_precision_still_loads(tmp_path, dtype, atol):
    reference = _saved(tmp_path, lambda state: None)
    path = save_checkpoint(tmp_path / "half.pth", {**torch.load(reference, weights_only=True),
                                                   "model": {k: v.to(dtype) if v.is_floating_point() else v
                                                             for k, v in torch.load(reference, weights_only=True)
                                                             ["model"].items()}})
    full, half = load_checkpoint(reference), load_checkpoint(path)
    images, mask = torch.rand(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        want, got = full.forward(images, mask), half.forward(images, mask)
    assert 0 < (got["pred_boxes"] - want["pred_boxes"]).abs().max() < atol
