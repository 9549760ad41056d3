"""Bad-input matrix of artifact metadata values (issue 23, part B): a sealed artifact whose metadata asks for a
canvas, batch or class table of absurd size, or carries a value of the wrong JSON type, is one ``Error:`` line
naming the file and the field before anything of that size is built — the content hash detects damage, not a
forger who recomputes it, so the values themselves are checked. Class names with terminal escapes are
escaped."""

from __future__ import annotations

from pathlib import Path

import pytest

from detr_core import load_checkpoint
from exporters import export
from exporters.onnx import restamp_onnx
from tests.cli.bad_input import check_bad_input, run_cli
from tests.exporters import crafted


@pytest.fixture(scope="module")
def onnx_artifact(small_checkpoint, tmp_path_factory) -> Path:
    return export(load_checkpoint(small_checkpoint), "onnx", tmp_path_factory.mktemp("meta") / "small.onnx",
                  input_size=(64, 64), validate=False, exporter="legacy", opset=17).path


def _resealed(source: Path, target: Path, **changes) -> Path:
    """A copy with fields changed and the content hash recomputed (what a forger does)."""
    restamp_onnx(crafted.edit_onnx_props(source, target, **changes))
    return target


CASES = {
    "input-size-huge": ({"input_size": [100000, 100000]}, ["input_size", "1..16384", "100000"]),
    "batch-huge": ({"batch_size": 10**9}, ["batch_size", "1..4096", "1000000000"]),
    "num-classes-huge": ({"num_classes": 10**9}, ["num_classes", "1..65536"]),
    "with-postprocess-string": ({"with_postprocess": "false"}, ["with_postprocess", "JSON boolean", "'false'"]),
    "class-name-not-a-string": ({"class_names": [1, 2]}, ["class_names", "list of strings"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_predict_refuses_metadata_values(onnx_artifact, small_images, tmp_path, case):
    changes, names = CASES[case]
    bad = _resealed(onnx_artifact, tmp_path / "forged.onnx", **changes)
    out = tmp_path / "pred"
    check_bad_input(["predict", small_images, "--model", bad, "--output-dir", out], names=["forged.onnx", *names])
    assert not list(out.rglob("*.png"))


def test_class_names_from_metadata_are_escaped(onnx_artifact, small_images, tmp_path):
    bad = _resealed(onnx_artifact, tmp_path / "names.onnx", class_names=[f"c{i}\x1b[31m" for i in range(10)])
    result = run_cli(["predict", small_images, "--model", bad, "--threshold", "0", "--output-dir", tmp_path / "p"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\\x1b[31m" in result.output
