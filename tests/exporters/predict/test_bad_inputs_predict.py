"""Bad input to ``detrtool predict``: one error line each, no traceback, earlier pictures untouched."""

from __future__ import annotations

import pytest
import torch

from tests.cli.bad_input import check_bad_input, fill, tmpfs
from tests.exporters.predict.images import shapes_val_images


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return shapes_val_images(tmp_path_factory.mktemp("predict-bad") / "shapes", count=1)[0]


@pytest.fixture
def previous(tmp_path):
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"\x89PNG earlier run")
    return out


def _args(image, out, *extra):
    return ["predict", image, "--output-dir", out, *extra]


def _ckpt(path):
    return ["--resume", path, "--nheads", "4"]


CASES = [
    ("neither resume nor model", lambda c, t: [], ["--resume", "--model"], 2),
    ("resume and model", lambda c, t: [*_ckpt(c), "--model", c], ["--resume", "--model"], 2),
    ("threshold above 1", lambda c, t: [*_ckpt(c), "--threshold", "1.5"], ["--threshold"], 2),
    ("batch of zero", lambda c, t: [*_ckpt(c), "--batch-size", "0"], ["--batch-size"], 2),
    ("canvas not HxW", lambda c, t: [*_ckpt(c), "--input-size", "10"], ["--input-size"], 2),
    ("unknown runtime", lambda c, t: [*_ckpt(c), "--format", "tflite"], ["--format"], 2),
    ("nheads of zero", lambda c, t: ["--resume", c, "--nheads", "0"], ["--nheads"], 2),
    ("artifact with nheads", lambda c, t: ["--model", t, "--nheads", "4"], ["--nheads"], 2),
    ("artifact with attention", lambda c, t: ["--model", t, "--show-attention"], ["--show-attention"], 2),
    ("artifact of unknown suffix", lambda c, t: ["--model", t], ["model.bin", "cannot tell the format"], 1),
    ("text file as checkpoint", lambda c, t: ["--resume", t, "--nheads", "4"], ["model.bin"], 1),
    ("mask threshold below 0", lambda c, t: [*_ckpt(c), "--mask-threshold", "-0.1"], ["--mask-threshold"], 2),
    ("panoptic threshold above 1", lambda c, t: [*_ckpt(c), "--panoptic", "--panoptic-threshold", "1.5"],
     ["--panoptic-threshold"], 2),
    ("panoptic from a detector", lambda c, t: [*_ckpt(c), "--panoptic"], ["--panoptic", "detector"], 1),
    ("panoptic with a class map", lambda c, t: [*_ckpt(c), "--panoptic", "--class-map", "coco-voc"],
     ["--panoptic", "--class-map"], 2),
]


@pytest.mark.parametrize("extra, names, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_predict_options(image, tiny_checkpoint_path, previous, tmp_path, extra, names, code):
    text = tmp_path / "model.bin"
    text.write_text("not a model")
    check_bad_input(_args(image, previous, *extra(tiny_checkpoint_path, text)), names=names, exit_code=code,
                    protect=[previous, text])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_cuda_without_a_gpu(image, tiny_checkpoint_path, previous):
    check_bad_input(_args(image, previous, *_ckpt(tiny_checkpoint_path), "--device", "cuda"),
                    names=["--device cuda", "not available"], exit_code=2, protect=[previous])


def test_missing_image_is_listed_and_fails(tiny_checkpoint_path, previous, tmp_path):
    missing = tmp_path / "missing.png"
    check_bad_input(_args(missing, previous, *_ckpt(tiny_checkpoint_path)),
                    names=["1 input(s) skipped", "missing.png"], protect=[previous / "earlier.png"])


def test_read_only_output_dir(image, tiny_checkpoint_path, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as out:
        check_bad_input(_args(image, out, *_ckpt(tiny_checkpoint_path)), names=["--output-dir", "read-only"])


def test_full_disk_leaves_no_partial_picture(image, tiny_checkpoint_path, tmp_path):
    with tmpfs(tmp_path / "full", size="64k") as out:
        fill(out)
        check_bad_input(_args(image, out, *_ckpt(tiny_checkpoint_path)), names=["--output-dir", "no space left"])
        assert sorted(p.name for p in out.iterdir()) == [".filler"]
