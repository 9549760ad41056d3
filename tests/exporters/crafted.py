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
