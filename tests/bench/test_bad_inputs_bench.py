"""Bad input to ``detrtool bench``: one error line each, no traceback, earlier results untouched."""

from __future__ import annotations

import pytest
import torch

from tests.cli.bad_input import check_bad_input, fill, tmpfs


@pytest.fixture
def previous(tmp_path):
    """An output folder holding an earlier run's report, which a refused run must leave as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.json").write_text('{"rows": []}')
    (out / "bench.md").write_text("| format |\n")
    return out


def _args(tiny_checkpoint_path, shapes_root, out, *extra):
    return ["bench", "--resume", tiny_checkpoint_path, "--nheads", "4", "--coco-path", shapes_root,
            "--input-size", "128x128", "--warmup", "0", "--runs", "1", "--output-dir", out,
            "--cache-dir", out.parent / "cache", *extra]


CASES = [
    ("unknown device", ["--devices", "tpu"], ["--devices", "'tpu'"], 1),
    ("unknown format", ["--formats", "tflite"], ["unknown bench format", "tflite"], 1),
    ("no row for the device", ["--formats", "onnx-fp16", "--devices", "cpu"], ["no benchmark row", "onnx-fp16"], 1),
    ("zero runs", ["--runs", "0"], ["--runs"], 2),
    ("negative warm-up", ["--warmup", "-1"], ["--warmup"], 2),
    ("negative mAP drop", ["--max-map-drop", "-0.5"], ["--max-map-drop"], 2),
    ("zero tolerance", ["--tolerance", "0"], ["--tolerance"], 2),
    ("zero threads", ["--threads", "0"], ["--threads"], 2),
    ("a billion threads (was a libgomp abort)", ["--threads", "1000000000"], ["--threads", "1000000000"], 2),
    ("canvas of zero", ["--input-size", "0x128"], ["--input-size"], 2),
    ("canvas not HxW", ["--input-size", "big"], ["--input-size"], 2),
    ("zero batch", ["--batch-size", "0"], ["--batch-size"], 2),
    ("resume and model both", ["--model", "detr_resnet50"], ["--resume", "--model"], 2),
]


@pytest.mark.parametrize("extra, names, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_bench_options(tiny_checkpoint_path, shapes_root, previous, extra, names, code):
    check_bad_input(_args(tiny_checkpoint_path, shapes_root, previous, *extra), names=names, exit_code=code,
                    protect=[previous])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: its rows would run")
def test_cuda_without_a_gpu_is_an_error_not_an_empty_table(tiny_checkpoint_path, shapes_root, previous):
    check_bad_input(_args(tiny_checkpoint_path, shapes_root, previous, "--devices", "cuda"),
                    names=["no benchmark row to run", "cuda not available here"], protect=[previous])


def test_output_dir_that_is_a_file(tiny_checkpoint_path, shapes_root, tmp_path):
    target = tmp_path / "results"
    target.write_text("not a folder")
    check_bad_input(_args(tiny_checkpoint_path, shapes_root, target), names=["--output-dir", "is a file"],
                    exit_code=2, protect=[target])


def test_read_only_output_dir(tiny_checkpoint_path, shapes_root, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as out:
        check_bad_input(_args(tiny_checkpoint_path, shapes_root, out), names=["--output-dir", "read-only"])


def test_full_disk_leaves_no_partial_report(tiny_checkpoint_path, shapes_root, tmp_path):
    with tmpfs(tmp_path / "full", size="64k") as out:
        fill(out)
        check_bad_input(_args(tiny_checkpoint_path, shapes_root, out, "--formats", "eager"),
                        names=["--output-dir", "no space left"])
        assert sorted(p.name for p in out.iterdir()) == [".filler"]
