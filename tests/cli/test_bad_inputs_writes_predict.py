"""The write rule, for ``detrtool predict``: it never writes over its inputs (an input folder as
``--output-dir``, an input file at an output name), no two outputs share a name (planned before anything
is written), a link at an output name is refused (its target byte-identical), a legal 240-byte file name
works, and a ``kill -9`` during an export on the fly leaves a temp folder that the next run removes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import PIL.Image
import pytest

from tests.cli.bad_input import check_bad_input, run_cli, tree_digest

pytestmark = pytest.mark.usefixtures("one_thread")
LINK_LINE = "is a symbolic link: detrtool does not write through links"


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for k, name in enumerate(("a.png", "b.png")):
        PIL.Image.new("RGB", (96, 80), (40 * k, 120, 200)).save(folder / name)
    return folder


def _predict(ckpt: Path, *args: object) -> list[object]:
    return ["predict", *args, "--resume", ckpt, "--nheads", 4, "--threshold", 0.15, "--input-size", "128x128"]


def test_an_input_folder_as_output_dir_is_refused(tiny_checkpoint_path, images):
    check_bad_input(_predict(tiny_checkpoint_path, images, "--output-dir", images),
                    names=["--output-dir", str(images), "input folder"], protect=[images])
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png"]


def test_an_input_file_at_an_output_name_is_refused(tiny_checkpoint_path, images, tmp_path):
    check_bad_input(_predict(tiny_checkpoint_path, images / "a.png", "--output-dir", images),
                    names=[str(images / "a.png"), "one of the input images"], protect=[images])
    linked = tmp_path / "out"
    linked.mkdir()
    (linked / "b.png").symlink_to(images / "b.png")  # an output name that is an input through a link
    check_bad_input(_predict(tiny_checkpoint_path, images / "b.png", "--output-dir", linked),
                    names=[str(linked / "b.png")], protect=[images])


def test_output_names_never_collide(tiny_checkpoint_path, images, tmp_path):
    """``a_attention.png`` as an input: its picture must not replace ``a.png``'s attention map (nor the
    reverse); every input keeps its own picture and attention grid."""
    shutil.copy(images / "b.png", images / "a_attention.png")
    out = tmp_path / "out"
    result = run_cli(_predict(tiny_checkpoint_path, images, "--output-dir", out, "--show-attention"))
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 6, written  # 3 pictures + 3 attention grids, none replaced
    pictures = [line.rsplit(" -> ", 1)[1] for line in result.output.splitlines() if " -> " in line]
    assert len(set(pictures)) == 3 and all(Path(p).name in written for p in pictures), pictures
    assert str(out / "a_attention.png") not in pictures  # that name is a.png's attention map


@pytest.mark.parametrize("where", ["picture", "attention", "detections.json"])
def test_a_link_at_an_output_name_is_refused(tiny_checkpoint_path, images, tmp_path, where):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    name = {"picture": "a.png", "attention": "a_attention.png", "detections.json": "detections.json"}[where]
    (out / name).symlink_to(victim)
    check_bad_input(_predict(tiny_checkpoint_path, images, "--output-dir", out, "--show-attention", "--save-json"),
                    names=[str(out / name), LINK_LINE], protect=[victim])
    assert sorted(p.name for p in out.iterdir()) == [name]  # refused before any picture


@pytest.mark.parametrize("length", [240, 250])
def test_a_long_file_name_works(tiny_checkpoint_path, images, tmp_path, length):
    """A legal name (up to 255 bytes) as input: every output and temp name stays within the limit."""
    long = images / ("x" * (length - 4) + ".png")
    shutil.copy(images / "a.png", long)
    out = tmp_path / "out"
    result = run_cli(_predict(tiny_checkpoint_path, long, "--output-dir", out, "--show-attention", "--save-json"))
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 3 and all(len(n.encode()) <= 255 for n in written), written
    if length == 240:
        assert long.name in written  # short enough: the name kept as it is
    assert not [n for n in written if ".tmp" in n]


def _marked(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("detrtool-"))


def test_a_killed_export_on_the_fly_leaves_a_folder_the_next_run_removes(tiny_checkpoint_path, images, tmp_path,
                                                                       monkeypatch):
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    args = [str(a) for a in _predict(tiny_checkpoint_path, images, "--output-dir", tmp_path / "out", "--format",
                                     "onnx")]
    process = subprocess.Popen([sys.executable, "-m", "cli.main", *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _marked(scratch) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()
    process.wait()
    left = _marked(scratch)
    assert left, "predict ended before its temp folder could be seen"
    other = scratch / "detrtool-predict-not-ours"  # no marker: never touched
    other.mkdir()
    (other / "keep").write_text("x")
    kept = tree_digest(other)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    assert _marked(scratch) == [other.name] and tree_digest(other) == kept
