"""The write rule, for ``detrtool convert`` (and the other commands writing one named file or folder): a
converted safetensors carries its own config (two conversions in one folder each load with theirs, a
``config.json`` there is never replaced), a link at an output is refused with its target byte-identical,
a parent that is a file is one line naming it, errors name ``--output`` and never a staging folder, and a
legal 240-byte file name works (temp names stay within 255 bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detr_core import load_checkpoint
from tests.cli.bad_input import check_bad_input, run_cli, tmpfs

LINK_LINE = "is a symbolic link: detrtool does not write through links"


def _convert(source: Path, to: str, output: Path, *extra: object) -> list[object]:
    return ["convert", source, "--to", to, "--output", output, *extra]


def test_two_safetensors_in_one_folder_each_load_with_their_own_config(tiny_checkpoint_path, tmp_path):
    """The old writer put each file's config in one shared config.json: converting a second model into the
    folder gave the first one the second's head count (and other detections)."""
    folder = tmp_path / "models"
    folder.mkdir()
    legacy = folder / "config.json"  # what an older conversion (or another tool) left there
    legacy.write_text(json.dumps({"format": "detrtool", "model": {"nheads": 8}}) + "\n")
    before = legacy.read_bytes()
    for name, nheads in (("a", 4), ("b", 2)):
        result = run_cli(_convert(tiny_checkpoint_path, "safetensors", folder / f"{name}.safetensors",
                                  "--nheads", nheads))
        assert result.exit_code == 0, result.output
    assert load_checkpoint(folder / "a.safetensors").config.nheads == 4
    assert load_checkpoint(folder / "b.safetensors").config.nheads == 2
    assert legacy.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.safetensors", "b.safetensors", "config.json"]


def test_a_safetensors_into_a_hugging_face_folder_leaves_its_files(tiny_checkpoint_path, tmp_path):
    folder = tmp_path / "hf"
    made = run_cli(_convert(tiny_checkpoint_path, "hf", folder, "--nheads", 2))
    assert made.exit_code == 0, made.output
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = run_cli(_convert(tiny_checkpoint_path, "safetensors", folder / "mine.safetensors", "--nheads", 4))
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "mine.safetensors"} == before
    assert load_checkpoint(folder / "mine.safetensors").config.nheads == 4
    assert load_checkpoint(folder).config.nheads == 2


@pytest.mark.parametrize("to, name", [("official", "out.pth"), ("safetensors", "out.safetensors"),
                                      ("hf", "hf/config.json"), ("hf", "hf/model.safetensors")])
def test_a_link_at_the_output_is_refused(tiny_checkpoint_path, tmp_path, to, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    link = tmp_path / name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(victim)
    output = tmp_path / name.split("/")[0]
    check_bad_input(_convert(tiny_checkpoint_path, to, output, "--nheads", 4), names=[str(link), LINK_LINE],
                    protect=[victim])
    assert link.is_symlink() and not [p for p in link.parent.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("command", ["convert", "predict", "export"])
def test_a_parent_that_is_a_file_is_named(tiny_checkpoint_path, tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a folder\n")
    image = tmp_path / "image.png"
    __import__("PIL.Image").Image.new("RGB", (64, 48)).save(image)
    args = {"convert": _convert(tiny_checkpoint_path, "official", blocker / "sub" / "out.pth", "--nheads", 4),
            "predict": ["predict", image, "--resume", tiny_checkpoint_path, "--nheads", 4, "--output-dir",
                        blocker / "sub"],
            "export": ["export", "--resume", tiny_checkpoint_path, "--nheads", 4, "--format", "onnx", "--output",
                       blocker / "sub" / "model.onnx", "--input-size", "64x64", "--no-validate"]}[command]
    result = check_bad_input(args, names=[str(blocker), "is a file, not a folder"], protect=[blocker])
    assert "File exists" not in result.output


def test_a_failed_folder_output_names_output_not_the_staging_folder(tiny_checkpoint_path, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        result = check_bad_input(_convert(tiny_checkpoint_path, "hf", ro / "hfo", "--nheads", 4),
                                 names=[str(ro / "hfo"), "read-only"])
    assert ".tmp" not in result.output and "detrtool-" not in result.output


@pytest.mark.parametrize("to, suffix", [("official", ".pth"), ("safetensors", ".safetensors")])
def test_a_240_byte_output_name_works(tiny_checkpoint_path, tmp_path, to, suffix):
    output = tmp_path / ("m" * (240 - len(suffix)) + suffix)
    result = run_cli(_convert(tiny_checkpoint_path, to, output, "--nheads", 4))
    assert result.exit_code == 0, result.output
    assert load_checkpoint(output, nheads=4).config.nheads == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]


def test_a_240_byte_export_name_works(tiny_checkpoint_path, tmp_path):
    output = tmp_path / ("m" * 235 + ".onnx")
    result = run_cli(["export", "--resume", tiny_checkpoint_path, "--nheads", 4, "--format", "onnx", "--output",
                      output, "--input-size", "64x64", "--no-validate"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]
