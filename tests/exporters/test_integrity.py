"""The hash recorded at export seals the content and every metadata field and is verified on every load:
4 KiB inverted in the middle of an ``.onnx``, ``.ts`` or ``.pt2``, an edited weight, each metadata edit of the
red-team list (class names reordered, output names swapped, mean NaN, std negative, size 16, input size,
format, num_classes, schema_version, ...), a metadata field given twice, a missing or empty hash and an
older detrtool's content-only hash are each refused in one line (load_runtime, predict, bench), never run;
the OpenVINO rt_info likewise."""

from __future__ import annotations

import json
import re
import shutil
import zipfile

import onnx
import pytest

from bench.artifacts import ArtifactCache
from detr_core import load_checkpoint
from detr_core.data.shapes import ShapesParams, generate_shapes
from exporters import ArtifactError, export, load_runtime, read_metadata
from exporters.artifact_file import CONTENT_ONLY, MISMATCH, NO_HASH, archive_digest
from exporters.metadata import MetadataError, seal
from exporters.onnx import onnx_digest
from tests.cli.bad_input import check_bad_input, run_cli
from tests.exporters import crafted
from tests.exporters.conftest import SMALL_CANVAS

SUFFIXES = [".onnx", ".ts", ".pt2"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_recorded_hash_seals_content_and_metadata(small_artifacts, suffix):
    path = small_artifacts[suffix]
    if suffix == ".onnx":
        model = onnx.load(str(path))
        content = onnx_digest(model)
        fields = {p.key[9:]: json.loads(p.value) for p in model.metadata_props if p.key.startswith("detrtool.")}
    else:
        with zipfile.ZipFile(path) as archive:
            content = archive_digest(archive, path)
            fields = json.loads(archive.read(next(n for n in archive.namelist() if n.endswith("extra/detrtool.json"))))
    recorded = read_metadata(path).content_sha256
    assert len(recorded) == 64 and recorded == seal(content, fields) != content
    assert seal(content, {**fields, "class_names": fields["class_names"][::-1] or ["x"]}) != recorded


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
    with pytest.raises(ArtifactError, match=f"edited.onnx: {re.escape(MISMATCH)}"):
        load_runtime(bad)


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


#: The red team's metadata edits (each leaves the model bytes as they were, the recorded hash too).
TAMPERED = {
    "class-names": {"class_names": ["circle", "square", "triangle"]},
    "output-names-swapped": {"output_names": ["pred_boxes", "pred_logits"]},
    "input-names-swapped": {"input_names": ["mask", "images"]},
    "mean-nan": {"mean": [float("nan")] * 3},
    "std-negative": {"std": [-1.0, -1.0, -1.0]},
    "size-16": {"size": 16, "max_size": 16},
    "input-size": {"input_size": [32, 32]},
    "batch-size": {"batch_size": 4},
    "format": {"format": "torchscript"},
    "num-classes": {"num_classes": 7},
    "num-queries": {"num_queries": 100},
    "postprocess": {"with_postprocess": True},
    "dynamic": {"dynamic": True},
    "schema-version": {"schema_version": 99},
}
ARCHIVE_TAMPERED = ("class-names", "output-names-swapped", "mean-nan")


@pytest.fixture
def predictions(tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    (folder / "earlier.png").write_bytes(b"earlier")
    return folder


def _refused_everywhere(bad, images, predictions, message: str) -> None:
    """One error line naming the file in load_runtime and in ``predict --model`` (exit 1, output untouched)."""
    pattern = f"{re.escape(bad.name)}: (.* \\()?{re.escape(message)}"
    with pytest.raises((ArtifactError, MetadataError), match=pattern) as info:
        load_runtime(bad)
    assert "\n" not in str(info.value)
    check_bad_input(["predict", images, "--model", bad, "--output-dir", predictions], names=[bad.name, message],
                    protect=[predictions])


def _edited(small_artifacts, suffix, target, **changes):
    if suffix == ".onnx":
        return crafted.edit_onnx_props(small_artifacts[suffix], target, **changes)
    return crafted.edit_zip_metadata(small_artifacts[suffix], target, **changes)


@pytest.mark.parametrize("suffix, case", [(".onnx", c) for c in TAMPERED] + [
    (s, c) for s in (".ts", ".pt2") for c in ARCHIVE_TAMPERED])
def test_metadata_edit_is_a_hash_mismatch(small_artifacts, small_images, predictions, tmp_path, suffix, case):
    bad = _edited(small_artifacts, suffix, tmp_path / f"{case}{suffix}", **TAMPERED[case])
    _refused_everywhere(bad, small_images, predictions, MISMATCH)


@pytest.mark.parametrize("suffix, how", [(".onnx", None), (".onnx", ""), (".ts", ""), (".pt2", None)])
def test_missing_or_empty_hash_is_refused(small_artifacts, small_images, predictions, tmp_path, suffix, how):
    """The red team's case: hash prop deleted (or "") and a weight zeroed; detrtool used to warn and run it."""
    source = small_artifacts[suffix]
    if suffix == ".onnx":
        model = onnx.load(str(source))
        weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        weight.raw_data = bytes(len(weight.raw_data))
        source = tmp_path / "zeroed.onnx"
        source.write_bytes(model.SerializeToString())
    bad = _edited({suffix: source}, suffix, tmp_path / f"nohash{suffix}", content_sha256=how)
    _refused_everywhere(bad, small_images, predictions, NO_HASH)


def test_content_only_hash_of_an_older_detrtool_is_refused(small_artifacts, tmp_path):
    model = onnx.load(str(small_artifacts[".onnx"]))
    bad = crafted.edit_onnx_props(small_artifacts[".onnx"], tmp_path / "old.onnx", content_sha256=onnx_digest(model))
    with pytest.raises(ArtifactError, match=f"old.onnx: {re.escape(CONTENT_ONLY)}"):
        load_runtime(bad)


def _twice_in_json(files: dict[str, bytes]) -> None:
    name = next(n for n in files if n.endswith("extra/detrtool.json"))
    files[name] = b'{"class_names": ["x", "y", "z"], ' + files[name].lstrip()[1:]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_metadata_field_given_twice_is_refused(small_artifacts, small_images, predictions, tmp_path, suffix):
    """ONNX props and JSON objects keep the last of a key given twice; detrtool refuses the file instead."""
    bad = tmp_path / f"twice{suffix}"
    if suffix == ".onnx":
        crafted.edit_onnx_props(small_artifacts[suffix], bad, twice="class_names")
        message = "metadata prop detrtool.class_names appears twice"
    elif suffix == ".pt2":
        crafted.rewrite_pt2(small_artifacts[suffix], bad, _twice_in_json)
        message = "metadata field 'class_names' appears twice"
    else:
        crafted._write_zip(bad, crafted.members(small_artifacts[suffix]))
        files = crafted.members(bad)
        _twice_in_json(files)
        crafted._write_zip(bad, files)
        message = "metadata field 'class_names' appears twice"
    _refused_everywhere(bad, small_images, predictions, message)


@pytest.fixture(scope="module")
def small_ir(small_checkpoint, tmp_path_factory):
    pytest.importorskip("openvino")
    return export(load_checkpoint(small_checkpoint), "openvino", tmp_path_factory.mktemp("ir") / "model.xml",
                  input_size=SMALL_CANVAS, validate=False).path


@pytest.mark.parametrize("changes, message", [({"class_names": ["a", "b", "c"]}, MISMATCH),
                                              ({"mean": [0.0, 0.0, 0.0]}, MISMATCH),
                                              ({"content_sha256": ""}, NO_HASH)])
def test_openvino_rt_info_edit_is_refused(small_ir, small_images, predictions, tmp_path, changes, message):
    bad = crafted.edit_ir_metadata(small_ir, tmp_path / "edited.xml", **changes)
    _refused_everywhere(bad, small_images, predictions, message)
    assert load_runtime(crafted.edit_ir_metadata(small_ir, tmp_path / "same.xml")).format == "openvino"
