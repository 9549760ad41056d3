"""Hostile and damaged artifacts for the security, integrity and bad-input tests.

Every payload writes a marker file when it runs; a test proves the payload is live by running it
through the unguarded library call (e.g. ``torch.export.load``) in a child process, and then proves
detrtool never runs it (the marker never appears).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from exporters.artifact_file import member_suffix

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Pickles to ``exec(<write marker>)``: unpickling it with a full unpickler runs that code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def payload_pickle(marker: Path) -> bytes:
    """``torch.save`` bytes whose unpickling runs the payload."""
    buffer = io.BytesIO()
    torch.save({"tensor": torch.zeros(1), "x": Payload(marker)}, buffer)
    return buffer.getvalue()


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite_pt2(source: Path, target: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy the ``.pt2`` at ``source`` to ``target`` with ``edit(members)`` applied (names below the root),
    written with PyTorch's own archive writer so that ``torch.export.load`` reads it."""
    from torch.export.pt2_archive._package import PT2ArchiveWriter

    files = {member_suffix(n): data for n, data in members(source).items()
             if member_suffix(n) not in (".data/version", ".data/serialization_id", "byteorder")}
    edit(files)
    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        for name, data in files.items():
            writer.write_bytes(name, data)
    target.write_bytes(buffer.getvalue())
    return target


def pickle_weight(files: dict[str, bytes], marker: Path) -> None:
    """Mark the first weight ``use_pickle`` and replace its bytes with the payload."""
    name = "data/weights/model_weights_config.json"
    config = json.loads(files[name])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    files[f"data/weights/{entry['path_name']}"] = payload_pickle(marker)
    files[name] = json.dumps(config).encode()


def poison_sample_inputs(files: dict[str, bytes], marker: Path) -> None:
    files["data/sample_inputs/model.pt"] = payload_pickle(marker)


def add_guard(files: dict[str, bytes], marker: Path) -> None:
    """A guard that ``ExportedProgram.module()`` execs."""
    program = json.loads(files["models/model.json"])
    program["guards_code"] = [f"open({str(marker)!r}, 'w').write('pwned') is None"]
    files["models/model.json"] = json.dumps(program).encode()


def call_os_system(files: dict[str, bytes], marker: Path) -> None:
    """Retarget one graph node to ``torch.os.system`` (resolved by attribute path under ``torch``)."""
    text = files["models/model.json"].decode()
    files["models/model.json"] = text.replace('"torch.ops.aten.relu.default"', '"torch.os.system"', 1).encode()


def run_unguarded(code: str, *, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (the library call without detrtool's checks)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def flip_middle(path: Path, size: int = 4096) -> Path:
    """Invert ``size`` bytes in the middle of the file (a bit-rot / tampering stand-in)."""
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - size // 2)
    for i in range(start, min(len(data), start + size)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def rewrite_zip(source: Path, target: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy a zip archive (TorchScript) with ``edit(members)`` applied (full member names), then record
    the new content hash as an attacker would (the hash detects damage, it is not a signature)."""
    files = members(source)
    edit(files)
    _write_zip(target, files)
    return restamp_zip(target)


def restamp_zip(path: Path) -> Path:
    """Rewrite the archive's metadata with the content hash of what it now holds."""
    from exporters.artifact_file import archive_digest

    files = members(path)
    with zipfile.ZipFile(path) as archive:
        digest = archive_digest(archive, path)
    name = next(n for n in files if member_suffix(n) == "extra/detrtool.json")
    meta = json.loads(files[name])
    meta["content_sha256"] = digest
    files[name] = json.dumps(meta).encode()
    _write_zip(path, files)
    return path


def _write_zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def pickle_global(marker: Path) -> bytes:
    """A plain pickle (protocol 2, as TorchScript's data.pkl) whose GLOBAL/REDUCE would run the payload."""
    import pickle

    return pickle.dumps(Payload(marker), protocol=2)


def with_external_data(source: Path, target: Path, location: str) -> Path:
    """Copy an ONNX artifact with its largest initializer moved to external data at ``location`` (any
    path string: ``../x``, absolute, a symlink's name) and the content hash restamped."""
    import onnx
    from onnx.external_data_helper import set_external_data

    from exporters.onnx import restamp_onnx

    model = onnx.load(str(source))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    size = len(tensor.raw_data)
    set_external_data(tensor, location=location, offset=0, length=size)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    target.write_bytes(model.SerializeToString())
    restamp_onnx(target)
    return target
