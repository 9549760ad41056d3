"""The content hash recorded at export is verified on every load: 4 KiB inverted in the middle of an
``.onnx``, ``.ts`` or ``.pt2`` is refused in one line (load_runtime, predict, bench), never run."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile

import onnx
import pytest

from bench.artifacts import ArtifactCache
from detr_core import load_checkpoint
from detr_core.data.shapes import ShapesParams, generate_shapes
from exporters import ArtifactError, load_runtime, read_metadata
from exporters.artifact_file import MISMATCH, archive_digest
from exporters.onnx import onnx_digest
from tests.cli.bad_input import check_bad_input, run_cli
from tests.exporters import crafted
from tests.exporters.conftest import SMALL_CANVAS

SUFFIXES = [".onnx", ".ts", ".pt2"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_recorded_hash_is_the_content_without_metadata(small_artifacts, suffix):
    path = small_artifacts[suffix]
    recorded = read_metadata(path).content_sha256
    if suffix == ".onnx":
        actual = onnx_digest(onnx.load(str(path)))
    else:
        with zipfile.ZipFile(path) as archive:
            actual = archive_digest(archive, path)
    assert len(recorded) == 64 and recorded == actual


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_flipped_artifact_is_refused_everywhere(small_artifacts, small_images, tmp_path, suffix):
    bad = crafted.flip_middle(shutil.copy(small_artifacts[suffix], tmp_path / f"flipped{suffix}"))
    with pytest.raises(ArtifactError, match=f"flipped\\{suffix}: ") as info:
        load_runtime(bad)
    assert "\n" not in str(info.value)
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"earlier")
    result = check_bad_input(["predict", small_images, "--model", bad, "--output-dir", out],
                             names=[f"flipped{suffix}"], protect=[out])
    assert "detection" not in result.output


def test_changed_weights_are_a_hash_mismatch(small_artifacts, tmp_path):
    """A change that keeps the file well-formed (one initializer's bytes) is caught by the hash itself."""
    model = onnx.load(str(small_artifacts[".onnx"]))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.raw_data = bytes(b ^ 0xFF for b in tensor.raw_data[:64]) + tensor.raw_data[64:]
    bad = tmp_path / "edited.onnx"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(ArtifactError, match=f"edited.onnx: {MISMATCH}"):
        load_runtime(bad)


def test_metadata_edit_keeps_the_artifact_loadable_and_no_hash_warns(small_artifacts, tmp_path, caplog):
    """The hash excludes the metadata (class names can be edited); an artifact without a hash (an older
    detrtool) loads with one warning."""
    def edit(files: dict[str, bytes], **changes) -> None:
        name = next(n for n in files if n.endswith("extra/detrtool.json"))
        files[name] = json.dumps({**json.loads(files[name]), **changes}).encode()

    renamed = crafted.rewrite_pt2(small_artifacts[".pt2"], tmp_path / "renamed.pt2",
                                  lambda files: edit(files, class_names=["a", "b", "c"]))
    assert load_runtime(renamed).metadata.class_names == ("a", "b", "c")
    old = crafted.rewrite_pt2(small_artifacts[".pt2"], tmp_path / "old.pt2", lambda files: edit(files, content_sha256=""))
    with caplog.at_level(logging.WARNING):
        load_runtime(old)
    assert [r.getMessage() for r in caplog.records if "no content hash" in r.getMessage()]


def test_flipped_artifact_in_bench_cache_is_a_failed_row(small_checkpoint, small_artifacts, tmp_path):
    shapes = generate_shapes(tmp_path / "shapes", ShapesParams(seed=1, image_size=64, train_count=1, val_count=2),
                             progress=False)
    cache = ArtifactCache(tmp_path / "cache", load_checkpoint(small_checkpoint), SMALL_CANVAS, 1)
    folder = tmp_path / "cache" / cache.export_key("torchscript")
    folder.mkdir(parents=True)
    crafted.flip_middle(shutil.copy(small_artifacts[".ts"], folder / "model.ts"))
    (folder / "export.json").write_text(json.dumps({"seconds": 1.0, "file": "model.ts"}))
    result = run_cli(["bench", "--resume", small_checkpoint, "--coco-path", shapes, "--formats", "torchscript",
                      "--input-size", f"{SMALL_CANVAS[0]}x{SMALL_CANVAS[1]}", "--warmup", "0", "--runs", "1",
                      "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 1, result.output
    assert "| torchscript | cpu | fp32 | ❌ |" in result.output and "model.ts: " in result.output
    assert "Traceback" not in result.output
