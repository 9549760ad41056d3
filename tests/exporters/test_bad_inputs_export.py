"""Bad input to ``detrtool export``, ``predict --model`` and ``bench --resume``: one error line naming the
file or option, no traceback, and the earlier output (a good artifact at ``--output``, a predictions
folder, a bench report) unchanged. Also: the nheads an official checkpoint cannot carry is warned about
and recorded."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from detr_core import load_checkpoint
from exporters import read_metadata
from tests.cli.bad_input import check_bad_input, run_cli, tmpfs
from tests.exporters import crafted


@pytest.fixture
def bad_files(small_checkpoint, small_artifacts, tmp_path) -> dict[str, Path]:
    """Broken checkpoints and artifacts, by name."""
    ckpt = small_checkpoint.read_bytes()
    files = {"notes.pth": b"not a checkpoint", "half.pth": ckpt[: len(ckpt) // 2], "empty.pth": b"",
             "empty.onnx": b"", "random.onnx": bytes(range(256)) * 64, "notzip.ts": b"plain text, not a zip",
             "empty.pt2": b"", "model.bin": small_artifacts[".onnx"].read_bytes()}
    for suffix in (".onnx", ".ts", ".pt2"):
        data = small_artifacts[suffix].read_bytes()
        files[f"half{suffix}"] = data[: len(data) // 2]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"model": {}, "x": crafted.Payload(tmp_path / "marker")}, tmp_path / "evil.pth")
    return {name: tmp_path / name for name in [*files, "evil.pth"]}


@pytest.fixture
def good_output(small_artifacts, tmp_path) -> Path:
    """A good artifact already at --output: a refused export must leave it byte-identical."""
    return Path(shutil.copy(small_artifacts[".onnx"], tmp_path / "existing.onnx"))


def _export(checkpoint, output, *extra):
    return ["export", "--resume", checkpoint, "--format", "onnx", "--exporter", "legacy", "--opset", "17",
            "--input-size", "64x96", "--no-validate", "--output", output, *extra]


EXPORT_CASES = [  # (id, checkpoint: a bad_files name or "good", extra args, names, exit code)
    ("nheads not dividing hidden_dim", "good", ["--nheads", "5"], ["--nheads", "hidden_dim 32"], 1),
    ("text file as checkpoint", "notes.pth", [], ["notes.pth", "not a readable PyTorch checkpoint"], 1),
    ("truncated checkpoint", "half.pth", [], ["half.pth", "not a readable PyTorch checkpoint"], 1),
    ("empty checkpoint", "empty.pth", [], ["empty.pth"], 1),
    ("checkpoint with a pickle payload", "evil.pth", [], ["evil.pth", "weights-only"], 1),
    ("missing checkpoint", "missing.pth", [], ["missing.pth", "no such checkpoint file"], 1),
    ("zero heads", "good", ["--nheads", "0"], ["--nheads"], 2),
    ("opset below any exporter", "good", ["--opset", "3"], ["--opset"], 2),
    ("zero batch", "good", ["--batch-size", "0"], ["--batch-size"], 2),
]


@pytest.mark.parametrize("source, extra, names, code", [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES])
def test_bad_export(small_checkpoint, bad_files, good_output, tmp_path, source, extra, names, code):
    checkpoint = small_checkpoint if source == "good" else bad_files.get(source, tmp_path / source)
    check_bad_input(_export(checkpoint, good_output, *extra), names=names, exit_code=code, protect=[good_output])
    assert not (tmp_path / "marker").exists()


def test_export_unknown_format_and_wrong_suffix(small_checkpoint, good_output, tmp_path):
    args = ["export", "--resume", small_checkpoint, "--output", good_output, "--format"]
    check_bad_input([*args, "tflite"], names=["'tflite'", "known formats"], protect=[good_output])
    check_bad_input([*args, "torchscript", "--output", tmp_path / "model.onnx", "--no-validate"],
                    names=["model.onnx", "must end with .ts or .pt"], protect=[good_output])


def test_export_into_a_read_only_folder(small_checkpoint, small_artifacts, tmp_path):
    with tmpfs(tmp_path / "disk", size="8m") as disk:
        output = Path(shutil.copy(small_artifacts[".onnx"], disk / "model.onnx"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        check_bad_input(_export(small_checkpoint, output), names=[str(output), "Read-only file system"],
                        protect=[output])


PREDICT_CASES = [  # (bad_files name, names in the error line)
    ("empty.onnx", ["empty.onnx", "empty"]),
    ("random.onnx", ["random.onnx"]),
    ("half.onnx", ["half.onnx", "not a valid ONNX model"]),
    ("notzip.ts", ["notzip.ts", "zip"]),
    ("half.ts", ["half.ts"]),
    ("empty.pt2", ["empty.pt2", "empty"]),
    ("half.pt2", ["half.pt2"]),
    ("model.bin", ["model.bin", "cannot tell the format"]),
]


@pytest.mark.parametrize("name, names", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_bad_artifact(small_images, bad_files, tmp_path, name, names):
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "img0.png").write_bytes(b"an earlier picture")
    check_bad_input(["predict", small_images, "--model", bad_files[name], "--output-dir", out], names=names,
                    protect=[out])


BENCH_CASES = [("notes.pth", ["notes.pth"]), ("half.pth", ["half.pth"]), ("evil.pth", ["evil.pth", "weights-only"])]


@pytest.mark.parametrize("name, names", BENCH_CASES, ids=[c[0] for c in BENCH_CASES])
def test_bench_bad_checkpoint(bad_files, tmp_path, name, names):
    out = tmp_path / "bench-out"
    out.mkdir()
    (out / "bench.json").write_text('{"rows": []}')
    check_bad_input(["bench", "--resume", bad_files[name], "--output-dir", out, "--cache-dir", tmp_path / "cache"],
                    names=names, protect=[out])
    assert not (tmp_path / "marker").exists()


def test_official_checkpoint_nheads_is_warned_and_recorded(tiny_checkpoint_path, small_checkpoint, tmp_path, caplog):
    """``tiny_checkpoint.pth`` is in the official format (no config): its nheads is assumed, said in one
    WARNING line through the CLI, and recorded in the artifact's metadata; given, nothing is assumed."""
    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "nheads" in r.getMessage()]

    out = tmp_path / "official.onnx"
    with caplog.at_level(logging.WARNING, logger="detr_core.checkpoint"):
        result = run_cli(_export(tiny_checkpoint_path, out))
    assert result.exit_code == 0, result.output
    assert warnings() == [f"{tiny_checkpoint_path}: official checkpoint does not record nheads; assuming 8 — pass "
                          "--nheads if it was trained with another value"]
    assert read_metadata(out).assumed == {"nheads": 8}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detr_core.checkpoint"):
        assert load_checkpoint(tiny_checkpoint_path, nheads=4).assumed_config == {}
        assert load_checkpoint(small_checkpoint).assumed_config == {}  # a detrtool checkpoint records it
    assert warnings() == []
