"""Bad ExecuTorch ``.pte`` and LiteRT ``.tflite`` files given to ``detrtool predict --model``: one error line
naming the file, no traceback, no crash of the runtime, the predictions folder unchanged. The crafted files
carry a valid content hash (re-sealed like an attacker would), so what refuses them is the check of what the
runtime would execute: a delegate or operator detrtool never writes, a custom op, a buffer outside the file.

Skipped, naming ``pip install detrtool[edge]``, without the ``edge`` extra."""

from __future__ import annotations

from pathlib import Path

import pytest

from detr_core import load_checkpoint
from exporters import export
from exporters.edge_file import missing, split, stamp
from exporters.metadata import ArtifactMetadata
from tests.cli.bad_input import check_bad_input
from tests.exporters.conftest import SMALL_CANVAS

pytestmark = pytest.mark.skipif(bool(missing("executorch", "litert_torch", "ai_edge_litert")),
                                reason=str(missing("executorch", "litert_torch", "ai_edge_litert")))


@pytest.fixture(scope="module")
def edge_artifacts(small_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The small checkpoint as a ``.pte`` and a ``.tflite`` (not validated: the export tests do that)."""
    model = load_checkpoint(small_checkpoint)
    folder = tmp_path_factory.mktemp("edge_small")
    return {suffix: export(model, fmt, folder / f"small{suffix}", input_size=SMALL_CANVAS, validate=False).path
            for fmt, suffix in (("executorch", ".pte"), ("litert", ".tflite"))}


def _resealed(path: Path, change) -> bytes:
    """The artifact with ``change(payload) -> payload`` applied and the metadata sealed over the new payload."""
    payload, fields = split(path.read_bytes(), path, path.suffix)
    return stamp(change(payload), ArtifactMetadata.from_dict({k: v for k, v in fields.items()
                                                              if k != "content_sha256"}))


def _pte_operator(payload: bytes) -> str:
    from exporters.executorch import _walk

    return next(op for op in _walk(payload, Path("x"))[2] if op.startswith("aten::")).split(".")[0]


def _tflite_model(payload: bytes, edit) -> bytes:
    """``payload`` unpacked with LiteRT's schema (object API), ``edit(model)`` applied, packed again."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(payload, 0)
    edit(model, schema)
    builder = flatbuffers.Builder(len(payload) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _custom_op(model, schema) -> None:
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = b"FlexReadFile"


def _buffer_outside(model, schema) -> None:
    buffer = next(b for b in model.buffers if b.data is not None and len(b.data))
    buffer.data, buffer.offset, buffer.size = None, 1 << 30, 4096


@pytest.fixture(scope="module")
def bad_edge_files(edge_artifacts, tmp_path_factory) -> dict[str, Path]:
    pte, tflite = edge_artifacts[".pte"], edge_artifacts[".tflite"]
    files: dict[str, bytes] = {"empty.pte": b"", "empty.tflite": b"", "random.pte": bytes(range(256)) * 64,
                               "onnx-named.tflite": b"\x08\x07\x12\x07pytorch" + bytes(300)}
    for name, path in (("pte", pte), ("tflite", tflite)):
        data = path.read_bytes()
        files[f"half.{name}"] = data[: len(data) // 2]
        flipped = bytearray(data)
        flipped[len(data) // 3: len(data) // 3 + 32] = bytes(b ^ 0xFF for b in flipped[len(data) // 3: len(data) // 3 + 32])
        files[f"flipped.{name}"] = bytes(flipped)
        files[f"metadata-edited.{name}"] = data.replace(b'"num_classes"', b'"num_klasses"', 1)
    files["delegate.pte"] = _resealed(pte, lambda p: p.replace(b"XnnpackBackend", b"EvilGPUBackend"))
    op = _pte_operator(split(pte.read_bytes(), pte, ".pte")[0])
    files["operator.pte"] = _resealed(pte, lambda p: p.replace(op.encode(), b"evil" + op.encode()[4:]))
    files["custom.tflite"] = _resealed(tflite, lambda p: _tflite_model(p, _custom_op))
    files["outside.tflite"] = _resealed(tflite, lambda p: _tflite_model(p, _buffer_outside))
    files["swapped.pte"] = tflite.read_bytes()  # a LiteRT model named .pte: its metadata names litert
    folder = tmp_path_factory.mktemp("bad_edge")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


CASES = [  # (file, substrings of the error line besides its name)
    ("empty.pte", ["empty"]),
    ("empty.tflite", ["empty"]),
    ("random.pte", ["no detrtool metadata"]),
    ("onnx-named.tflite", ["no detrtool metadata"]),
    ("half.pte", ["truncated"]),
    ("half.tflite", ["truncated"]),
    ("flipped.pte", ["content hash mismatch"]),
    ("flipped.tflite", ["content hash mismatch"]),
    ("metadata-edited.pte", ["content hash mismatch"]),
    ("metadata-edited.tflite", ["content hash mismatch"]),
    ("delegate.pte", ["delegate 'EvilGPUBackend'", "XnnpackBackend"]),
    ("operator.pte", ["operator 'evil::", "never"]),
    ("custom.tflite", ["custom operator 'FlexReadFile'"]),
    ("outside.tflite", ["points outside the file"]),
    ("swapped.pte", ["format 'litert', not executorch"]),
]


@pytest.mark.parametrize("name, names", CASES, ids=[c[0] for c in CASES])
def test_predict_refuses_a_bad_edge_artifact(small_images, bad_edge_files, tmp_path, name, names):
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "img0.png").write_bytes(b"an earlier picture")
    check_bad_input(["predict", small_images, "--model", bad_edge_files[name], "--output-dir", out],
                    names=[name, *names], protect=[out])


def test_resealed_files_pass_the_hash_and_are_caught_by_the_program_check(bad_edge_files):
    """The crafted files are not refused for their hash: the seal matches, the content check refuses them."""
    from exporters.edge_file import verified

    for name in ("delegate.pte", "operator.pte", "custom.tflite", "outside.tflite"):
        path = bad_edge_files[name]
        verified(path, kind=path.suffix, fmt="executorch" if path.suffix == ".pte" else "litert")
