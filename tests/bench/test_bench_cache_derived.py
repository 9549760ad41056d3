"""bench's artifact cache and derived (quantised) artifacts: an int8 artifact of another model planted under this
model's cache key is not benchmarked as this model's (it was, ✅, exit 0); the derived artifact records its
source's content hash, recipe and options, and is reused only when they match."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
from click.testing import CliRunner

from cli.main import cli
from exporters.formats import read_metadata


def _bench(checkpoint: Path, shapes_root: Path, tmp_path: Path, cache: Path):
    result = CliRunner().invoke(cli, [
        "bench", "--resume", str(checkpoint), "--nheads", "4", "--coco-path", str(shapes_root), "--input-size",
        "128x128", "--warmup", "0", "--runs", "1", "--no-padded-batch", "--formats", "onnx-int8-dynamic",
        "--output-dir", str(tmp_path / "out"), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    return result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_planted_int8_artifact_of_another_model_is_made_anew(tiny_checkpoint_path, shapes_root, tmp_path):
    state = torch.load(tiny_checkpoint_path, weights_only=True)
    state = state.get("model", state)
    other = {k: v * 1.5 if k.startswith(("class_embed", "bbox_embed")) else v for k, v in state.items()}
    torch.save({"model": other}, tmp_path / "other.pth")
    _bench(tmp_path / "other.pth", shapes_root, tmp_path, tmp_path / "cache-other")
    _bench(tiny_checkpoint_path, shapes_root, tmp_path, tmp_path / "cache")
    [theirs] = (tmp_path / "cache-other").glob("int8-dynamic-*/model.onnx")
    [ours] = (tmp_path / "cache").glob("int8-dynamic-*/model.onnx")
    [source] = (tmp_path / "cache").glob("onnx-*/model.onnx")
    made = _sha(ours)
    shutil.copyfile(theirs, ours)  # the attacker's swap: another model's valid, sealed int8 artifact
    _bench(tiny_checkpoint_path, shapes_root, tmp_path, tmp_path / "cache")
    assert _sha(ours) != _sha(theirs), "the planted artifact was reused as this model's"
    assert _sha(ours) == made  # made anew, deterministically: the same bytes as the first time
    recorded = read_metadata(ours).extra["derived_from"]
    assert recorded["source_sha256"] == read_metadata(source).content_sha256
    assert recorded["recipe"] == "int8-dynamic"


def test_derived_artifact_is_reused_when_it_matches(tiny_checkpoint_path, shapes_root, tmp_path):
    _bench(tiny_checkpoint_path, shapes_root, tmp_path, tmp_path / "cache")
    [ours] = (tmp_path / "cache").glob("int8-dynamic-*/model.onnx")
    before = ours.stat().st_mtime_ns
    _bench(tiny_checkpoint_path, shapes_root, tmp_path, tmp_path / "cache")
    assert ours.stat().st_mtime_ns == before  # not made again
