"""Bad-input matrix of ``detrtool convert`` and of Hugging Face / safetensors checkpoints (detectors and
``DetrForSegmentation``, whose mask head must be whole): each case is one
``Error:`` line naming the file, key or option, no traceback, and the source and any existing output
untouched."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from detr_core.checkpoint import model_payload, save_checkpoint
from detr_core.config import ModelConfig
from detr_core.registry import build_model
from tests.cli.bad_input import check_bad_input


def copy_folder(hf_folder: Path, root: Path, name: str) -> Path:
    return Path(shutil.copytree(hf_folder, root / name))


def edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def edit_weights(folder: Path, edit) -> Path:
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def sources(hf_folder, tmp_path_factory) -> dict[str, Path]:
    """One bad source per case, built from the session's random HF DETR folder."""
    root = tmp_path_factory.mktemp("bad-sources")
    out = {"text": root / "notes.txt", "empty": root / "empty-folder", "corrupt": root / "broken.safetensors"}
    out["text"].write_text("not a checkpoint\n")
    out["empty"].mkdir()
    out["corrupt"].write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    no_weights = copy_folder(hf_folder, root, "no-weights")
    (no_weights / "model.safetensors").unlink()
    out["no_weights"] = no_weights
    not_json = copy_folder(hf_folder, root, "not-json")
    (not_json / "config.json").write_text("{'model_type': 'detr',")
    out["not_json"] = not_json
    out["deformable"] = edit_config(copy_folder(hf_folder, root, "deformable"), model_type="deformable_detr")
    timm_config = json.loads((hf_folder / "config.json").read_text())["backbone_config"]
    out["resnet50d"] = edit_config(copy_folder(hf_folder, root, "resnet50d"),
                                   backbone_config={**timm_config, "backbone": "resnet50d"})
    out["labels"] = edit_config(copy_folder(hf_folder, root, "labels"), id2label={"0": "a", "5": "b", "9": "c"})
    out["wrong_key"] = edit_weights(copy_folder(hf_folder, root, "wrong-key"), lambda s: s.update(
        {"model.input_projektion.weight": s.pop("model.input_projection.weight")}))
    out["wrong_shape"] = edit_weights(copy_folder(hf_folder, root, "wrong-shape"), lambda s: s.update(
        {"bbox_predictor.layers.2.weight": s["bbox_predictor.layers.2.weight"][:2].clone()}))
    pickled = copy_folder(hf_folder, root, "pickled")
    (pickled / "model.safetensors").unlink()
    torch.save({"model.input_projection.weight": argparse.Namespace(a=1)}, pickled / "pytorch_model.bin")
    out["pickled"] = pickled
    config = ModelConfig(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1,
                         dim_feedforward=32, num_queries=3, num_classes=2, pre_norm=True)
    out["pre_norm"] = save_checkpoint(root / "pre-norm.pth", model_payload(build_model(config), config))
    return out


def _rows(sources: dict[str, Path], hf_folder: Path, tmp: Path) -> dict[str, tuple[list, list, int, list]]:
    """id -> (args after ``detrtool``, names in the error line, exit code, protected paths)."""
    a_file, a_folder = tmp / "existing.pth", tmp / "existing-folder"
    a_file.write_bytes(b"keep me")
    a_folder.mkdir()
    convert = ["convert"]
    return {
        "src-missing": (convert + [tmp / "missing.pth", "--to", "hf", "--output", tmp / "o"], ["missing.pth"], 2, []),
        "src-not-a-checkpoint": (convert + [sources["text"], "--to", "official", "--output", tmp / "o.pth"],
                                 ["notes.txt", "not a readable PyTorch checkpoint"], 1, [sources["text"]]),
        "folder-without-config": (convert + [sources["empty"], "--to", "official", "--output", tmp / "o.pth"],
                                  ["empty-folder", "config.json"], 1, []),
        "hf-folder-without-weights": (convert + [sources["no_weights"], "--to", "official", "--output", tmp / "o.pth"],
                                      ["no-weights", "without weights"], 1, [sources["no_weights"]]),
        "config-not-json": (convert + [sources["not_json"], "--to", "official", "--output", tmp / "o.pth"],
                            ["not-json/config.json", "not valid JSON"], 1, [sources["not_json"]]),
        "unsupported-model-type": (convert + [sources["deformable"], "--to", "official", "--output", tmp / "o.pth"],
                                   ["deformable/config.json", "model_type", "deformable_detr"], 1, [sources["deformable"]]),
        "unsupported-backbone": (convert + [sources["resnet50d"], "--to", "official", "--output", tmp / "o.pth"],
                                 ["resnet50d/config.json", "backbone", "resnet50d"], 1, [sources["resnet50d"]]),
        "id2label-gaps": (convert + [sources["labels"], "--to", "official", "--output", tmp / "o.pth"],
                          ["labels/config.json", "id2label", "0..2"], 1, [sources["labels"]]),
        "safetensors-wrong-key": (convert + [sources["wrong_key"], "--to", "official", "--output", tmp / "o.pth"],
                                  ["wrong-key/model.safetensors", "model.input_projektion.weight"], 1,
                                  [sources["wrong_key"]]),
        "safetensors-wrong-shape": (convert + [sources["wrong_shape"], "--to", "official", "--output", tmp / "o.pth"],
                                    ["wrong-shape/model.safetensors", "bbox_embed.layers.2.weight [2, 64]"], 1,
                                    [sources["wrong_shape"]]),
        "safetensors-corrupt": (convert + [sources["corrupt"], "--to", "hf", "--output", tmp / "o"],
                                ["broken.safetensors", "not a readable safetensors file"], 1, [sources["corrupt"]]),
        "bin-with-pickled-object": (convert + [sources["pickled"], "--to", "official", "--output", tmp / "o.pth"],
                                    ["pytorch_model.bin", "weights-only"], 1, [sources["pickled"]]),
        "pre-norm-to-hf": (convert + [sources["pre_norm"], "--to", "hf", "--output", tmp / "o"], ["pre-norm.pth", "--to hf", "pre_norm"], 1,
                           [sources["pre_norm"]]),
        "output-is-a-file-for-hf": (convert + [hf_folder, "--to", "hf", "--output", a_file], ["--output", "existing.pth"],
                                    2, [a_file]),
        "output-is-a-folder-for-official": (convert + [hf_folder, "--to", "official", "--output", a_folder],
                                            ["--output", "existing-folder"], 2, [a_folder]),
        "safetensors-output-name": (convert + [hf_folder, "--to", "safetensors", "--output", tmp / "weights.pt"],
                                    ["--output", ".safetensors"], 2, []),
        "unknown-to": (convert + [hf_folder, "--to", "onnx", "--output", tmp / "o"], ["--to"], 2, []),
    }


ROW_IDS = ["src-missing", "src-not-a-checkpoint", "folder-without-config", "hf-folder-without-weights",
           "config-not-json", "unsupported-model-type", "unsupported-backbone", "id2label-gaps",
           "safetensors-wrong-key", "safetensors-wrong-shape", "safetensors-corrupt", "bin-with-pickled-object",
           "pre-norm-to-hf", "output-is-a-file-for-hf", "output-is-a-folder-for-official", "safetensors-output-name",
           "unknown-to"]


@pytest.mark.parametrize("row", ROW_IDS)
def test_bad_input(row, sources, hf_folder, tmp_path):
    args, names, exit_code, protect = _rows(sources, hf_folder, tmp_path)[row]
    check_bad_input(args, names=[str(n) for n in names], exit_code=exit_code, protect=[hf_folder, *protect])
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.pth").exists()


# --- HF DetrForSegmentation sources: a partial or malformed mask head, bad stuff ids ------------------
@pytest.fixture(scope="module")
def segm_sources(hf_segm_folder, tmp_path_factory) -> dict[str, Path]:
    """One bad DetrForSegmentation source per case, built from the session's random HF segmentation folder."""
    root = tmp_path_factory.mktemp("bad-segm-sources")
    copy = lambda name: copy_folder(hf_segm_folder, root, name)  # noqa: E731
    missing = edit_weights(copy("lay3-missing"), lambda s: s.pop("mask_head.lay3.weight"))
    return {
        "missing": missing, "missing_folder": missing.parent,
        "shape": edit_weights(copy("out-lay-shape"), lambda s: s.update(
            {"mask_head.out_lay.weight": s["mask_head.out_lay.weight"][:, :4].clone()})),
        "unknown": edit_weights(copy("lay6"), lambda s: s.update({"mask_head.lay6.weight": s.pop("mask_head.lay5.weight")})),
        "q_only": edit_weights(copy("k-missing"), lambda s: [s.pop(k) for k in list(s) if "k_linear" in k]),
        "stuff": edit_config(copy("stuff-ids"), detrtool_stuff_classes=[2, 99]),
    }


SEGM_ROWS = {  # id -> (source, names in the error line)
    "segm-mask-head-tensor-missing": ("missing", ["lay3-missing/model.safetensors", "missing keys",
                                                  "mask_head.lay3.weight"]),
    "segm-folder-mask-head-tensor-missing": ("missing_folder", ["lay3-missing", "mask_head.lay3.weight"]),
    "segm-out-lay-wrong-shape": ("shape", ["out-lay-shape/model.safetensors",
                                           "mask_head.out_lay.weight [1, 4, 3, 3] vs model [1, 8, 3, 3]"]),
    "segm-unknown-mask-head-key": ("unknown", ["lay6/model.safetensors", "mask_head.lay6.weight"]),
    "segm-bbox-attention-partial": ("q_only", ["k-missing/model.safetensors", "bbox_attention.k_linear.weight"]),
    "segm-stuff-ids-out-of-range": ("stuff", ["stuff-ids/config.json", "detrtool_stuff_classes", "0..3"]),
}


@pytest.mark.parametrize("row", list(SEGM_ROWS))
def test_bad_segmentation_input(row, segm_sources, hf_segm_folder, tmp_path):
    source, names = SEGM_ROWS[row]
    result = check_bad_input(["convert", segm_sources[source], "--to", "hf", "--output", tmp_path / "o"],
                             names=names, protect=[hf_segm_folder, segm_sources["missing_folder"].parent])
    assert not (tmp_path / "o").exists(), result.output


# --- the output folder of --to hf: written whole or not at all ----------------------------------------
def _no_space(monkeypatch) -> None:
    """config.json's write fails as on a full disk (an OSError naming no file), after model.safetensors."""
    import errno

    import detr_core.hf.files as files
    from detr_core.atomic import atomic_write

    def full(path, text):
        def write(_handle):
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic_write(path, write)

    monkeypatch.setattr(files, "atomic_write_text", full)


def test_convert_to_hf_failing_leaves_no_folder(hf_folder, tmp_path, monkeypatch):
    _no_space(monkeypatch)
    out = tmp_path / "new" / "hfo"
    check_bad_input(["convert", hf_folder, "--to", "hf", "--output", out],
                    names=[f"cannot write {out / 'config.json'}", "no space left on device"], protect=[hf_folder])
    assert not (tmp_path / "new").exists()


def test_convert_to_hf_failing_keeps_the_old_folder(hf_folder, tmp_path, monkeypatch):
    out = copy_folder(hf_folder, tmp_path, "hfo")
    (out / "README.md").write_text("mine")
    _no_space(monkeypatch)
    check_bad_input(["convert", hf_folder, "--to", "hf", "--output", out],
                    names=[f"cannot write {out / 'config.json'}", "no space left on device"], protect=[out])
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_convert_to_hf_on_a_full_disk(hf_folder, tmp_path):
    from tests.cli.bad_input import tmpfs

    with tmpfs(tmp_path / "disk", size="256k") as disk:
        check_bad_input(["convert", hf_folder, "--to", "hf", "--output", disk / "hfo"],
                        names=[str(disk / "hfo" / "model.safetensors"), "no space left on device"])
        assert list(disk.iterdir()) == []
