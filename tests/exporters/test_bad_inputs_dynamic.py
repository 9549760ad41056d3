"""Bad-input matrix of dynamic exports: options that cannot be dynamic, inputs a dynamic artifact refuses
(one line naming the tensor), and dynamic ``.pt2`` files whose symbolic strings carry code (proven live
through the unguarded ``torch.export.load``, then refused by detrtool in one line, never run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detr_core import load_checkpoint
from exporters import export, load_runtime
from exporters.pt2_safety import UnsafeArtifactError
from exporters.runtime import InputError
from tests.cli.bad_input import check_bad_input
from tests.exporters import crafted
from tests.exporters.conftest import SMALL_CANVAS


@pytest.fixture(scope="module")
def dynamic_pt2(small_checkpoint, tmp_path_factory) -> Path:
    model = load_checkpoint(small_checkpoint)
    return export(model, "torch-export", tmp_path_factory.mktemp("dyn") / "dyn.pt2", input_size=SMALL_CANVAS,
                  dynamic=True, validate=False).path


@pytest.fixture(scope="module")
def dynamic_runtime(dynamic_pt2):
    return load_runtime(dynamic_pt2)


@pytest.mark.parametrize("extra, names", [
    (["--format", "torchscript", "--method", "trace"], ["--dynamic", "traced TorchScript", "--method script"]),
    (["--format", "onnx", "--input-size", "48x96"], ["--dynamic", "height 48", "64..4096"]),
    (["--format", "onnx", "--batch-size", "2000"], ["--dynamic", "batch 2000", "1..1024"]),
], ids=["torchscript-trace", "canvas-below-range", "batch-above-range"])
def test_export_options_that_cannot_be_dynamic(small_checkpoint, tmp_path, extra, names):
    target = tmp_path / ("out.ts" if "torchscript" in extra else "out.onnx")
    target.write_bytes(b"earlier")
    check_bad_input(["export", "--resume", small_checkpoint, "--dynamic", "--output", target, *extra],
                    names=names, protect=[target])


def _images(batch: int = 2, h: int = 64, w: int = 96) -> torch.Tensor:
    return torch.zeros(batch, 3, h, w)


@pytest.mark.parametrize("images, mask, names", [
    (_images(), torch.zeros(2, 64, 80, dtype=torch.bool), ["'mask'", "width 80", "'images'", "width 96"]),
    (_images(), torch.zeros(3, 64, 96, dtype=torch.bool), ["'mask'", "batch 3", "batch 2"]),
    (_images()[0], torch.zeros(2, 64, 96, dtype=torch.bool), ["'images'", "float32 [batch, 3, height, width]"]),
    (_images(), torch.zeros(2, 1, 64, 96, dtype=torch.bool), ["'mask'", "bool [batch, height, width]"]),
    (_images(), torch.zeros(2, 64, 96), ["'mask'", "bool", "got float32"]),
    (torch.zeros(2, 1, 64, 96), torch.zeros(2, 64, 96, dtype=torch.bool), ["'images'", "[2, 1, 64, 96]"]),
    (_images(h=32), torch.zeros(2, 32, 96, dtype=torch.bool), ["'images'", "height 32", "64..4096"]),
], ids=["mask-width", "mask-batch", "images-rank", "mask-rank", "mask-dtype", "images-channels",
        "below-range"])
def test_dynamic_runtime_refuses_inconsistent_inputs(dynamic_runtime, images, mask, names):
    with pytest.raises(InputError) as info:
        dynamic_runtime(images, mask)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def _payload_expr(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def _edit_program(edit):
    def apply(files: dict[str, bytes]) -> None:
        program = json.loads(files["models/model.json"])
        edit(program)
        files["models/model.json"] = json.dumps(program).encode()
    return apply


def _replace_expr(marker: Path):
    """Every symbolic expression of one symbol becomes a payload (torch sympifies each one it reads)."""
    def edit(program: dict) -> None:
        text = json.dumps(program)
        first = text.index('"expr_str": "') + len('"expr_str": "')
        old = text[first:text.index('"', first)]
        program.clear()
        program.update(json.loads(text.replace(json.dumps(old)[1:-1], _payload_expr(marker))))
    return edit


def _add_guard(marker: Path):
    def edit(program: dict) -> None:
        program["guards_code"].append(f"__import__('os').system('touch {marker}') == 0")
    return edit


def _string_range(marker: Path):
    def edit(program: dict) -> None:
        name = next(iter(program["range_constraints"]))
        program["range_constraints"][name]["max_val"] = _payload_expr(marker)
    return edit


def _unguarded(path: Path) -> None:
    try:
        program = torch.export.load(str(path))
        program.module()(*program.example_inputs[0])
    except Exception:  # noqa: BLE001 - the payloads break the program after running; that is fine here
        pass


@pytest.mark.parametrize("make, live, why", [
    (_replace_expr, True, "symbolic expression"),
    (_add_guard, True, "guards code"),
    (_string_range, False, "not integer bounds"),
], ids=["expr_str", "guards_code", "range"])
def test_malicious_symbolic_strings_are_refused(dynamic_pt2, small_images, tmp_path, make, live, why):
    marker = tmp_path / "marker"
    bad = crafted.rewrite_pt2(dynamic_pt2, tmp_path / "bad.pt2", _edit_program(make(marker)))
    if live:
        _unguarded(bad)
        assert marker.exists(), "the crafted file must carry a live payload"
        marker.unlink()
    with pytest.raises(UnsafeArtifactError, match=f"bad.pt2: refused to load: archive member .*models/model.json.*{why}"):
        load_runtime(bad)
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "img0.png").write_bytes(b"earlier result")
    check_bad_input(["predict", small_images, "--model", bad, "--output-dir", out],
                    names=["bad.pt2", "models/model.json", "refused", why], protect=[out])
    assert not marker.exists()


def test_clean_dynamic_copy_still_loads(dynamic_pt2, tmp_path):
    same = crafted.rewrite_pt2(dynamic_pt2, tmp_path / "same.pt2", lambda files: None)
    runtime = load_runtime(same)
    assert runtime(_images(3, 80, 64), torch.zeros(3, 80, 64, dtype=torch.bool))["pred_logits"].shape[0] == 3
