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
from typing import Any

import torch
from torch import Tensor, nn

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
    from exporters.metadata import seal

    files = members(path)
    with zipfile.ZipFile(path) as archive:
        digest = archive_digest(archive, path)
    name = next(n for n in files if member_suffix(n) == "extra/detrtool.json")
    meta = json.loads(files[name])
    meta["content_sha256"] = seal(digest, meta)
    files[name] = json.dumps(meta).encode()
    _write_zip(path, files)
    return path


def edit_zip_metadata(source: Path, target: Path, **changes: Any) -> Path:
    """Copy a ``.ts``/``.pt2`` with fields of its ``extra/detrtool.json`` changed (``None``: removed) and the
    recorded hash left as it was (what a hand edit of the metadata does)."""
    files = members(source)
    name = next(n for n in files if member_suffix(n) == "extra/detrtool.json")
    meta = json.loads(files[name])
    for key, value in changes.items():
        meta.pop(key) if value is None else meta.__setitem__(key, value)
    files[name] = json.dumps(meta).encode()
    _write_zip(target, files)
    return target


def edit_onnx_props(source: Path, target: Path, *, twice: str | None = None, **changes: Any) -> Path:
    """Copy an ONNX artifact with ``detrtool.<field>`` props set to ``changes`` (JSON; ``None``: removed),
    ``twice``: that field's prop appended a second time (same value); the recorded hash left as it was."""
    import onnx

    model = onnx.load(str(source))
    props = [(p.key, p.value) for p in model.metadata_props]
    props = [(k, json.dumps(changes[k[9:]]) if k[9:] in changes else v) for k, v in props
             if not (k[9:] in changes and changes[k[9:]] is None)]
    props += [(k, v) for k, v in props if k == f"detrtool.{twice}"]
    del model.metadata_props[:]
    for key, value in props:
        model.metadata_props.add(key=key, value=value)
    target.write_bytes(model.SerializeToString())
    return target


def edit_ir_metadata(source: Path, target: Path, **changes: Any) -> Path:
    """Copy an OpenVINO IR pair with fields of its detrtool rt_info entry changed (recorded hash kept)."""
    import html
    import shutil

    from exporters.openvino import _ENTRY, weights_path

    def edit(match) -> str:
        meta = json.loads(html.unescape(match.group(2)))
        meta.update(changes)
        return match.group(1) + html.escape(json.dumps(meta), quote=True) + match.group(3)

    target.write_text(_ENTRY.sub(edit, source.read_text(encoding="utf-8")), encoding="utf-8")
    shutil.copy(weights_path(source), weights_path(target))
    return target


class _FileWriter(nn.Module):
    """The red team's payload: ``forward`` maps ``victim`` read-write (``aten::from_file``), fills it with
    ``X``, then returns the wrapped artifact's outputs (its result folded in, so it is never dead code)."""

    def __init__(self, inner: nn.Module, victim: str) -> None:
        super().__init__()
        self.inner = inner
        self.victim = victim

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        mark = torch.from_file(self.victim, shared=True, size=8, dtype=torch.uint8).fill_(88)
        logits, boxes = self.inner(images, mask)
        return logits + mark.sum().float() * 0, boxes


class _SetstateWriter(nn.Module):
    """The same payload in ``__setstate__``, which ``torch.jit.load`` runs while unpickling the module (before
    any method could be inspected); ``forward`` is a stand-in."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim
        self.scale = torch.ones(1)

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return images * self.scale, mask.float()

    @torch.jit.export
    def __getstate__(self) -> tuple[str, Tensor, bool]:
        return (self.victim, self.scale, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, Tensor, bool]) -> None:
        self.victim = state[0]
        self.training = state[2]
        mark = torch.from_file(self.victim, shared=True, size=8, dtype=torch.uint8).fill_(88)
        self.scale = state[1] + mark.sum().float() * 0


def file_writing_torchscript(source: Path, target: Path, victim: Path, *, in_setstate: bool = False) -> Path:
    """The ``.ts`` at ``source`` wrapped by a module that overwrites ``victim`` (in ``forward`` or in
    ``__setstate__``), exported by detrtool itself with the source's metadata: its hash is valid."""
    from exporters.torchscript import export_torchscript, read_torchscript_metadata

    module = _SetstateWriter(str(victim)) if in_setstate else _FileWriter(torch.jit.load(str(source)), str(victim))
    target.write_bytes(export_torchscript(module, (), metadata=read_torchscript_metadata(source)))
    return target


def file_writing_program(source: Path, target: Path, victim: Path) -> Path:
    """The ``.pt2`` at ``source`` wrapped by a program that calls ``aten.from_file(victim)`` + ``fill_``
    (a Meta kernel registered for the export only), exported by detrtool itself: its hash is valid."""
    from exporters.torch_export import export_program, read_program_metadata

    metadata = read_program_metadata(source)
    library = torch.library.Library("aten", "IMPL")
    library.impl("from_file", _meta_from_file, "Meta")
    try:
        module = _ProgramWriter(torch.export.load(str(source)).module(), str(victim))
        h, w = metadata.input_size
        inputs = (torch.zeros(1, 3, h, w), torch.zeros(1, h, w, dtype=torch.bool))
        target.write_bytes(export_program(module, inputs, metadata=metadata))
    finally:
        library._destroy()
    return target


def _meta_from_file(filename, shared=None, size=0, *, dtype=None, layout=None, device=None, pin_memory=None):
    return torch.empty(size, dtype=dtype, device="meta")


class _ProgramWriter(nn.Module):
    def __init__(self, inner: nn.Module, victim: str) -> None:
        super().__init__()
        self.inner = inner
        self.victim = victim

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        mark = torch.ops.aten.from_file.default(self.victim, True, 8, dtype=torch.uint8)
        mark = torch.ops.aten.fill_.Scalar(mark, 88)
        logits, boxes = self.inner(images, mask)
        return logits + mark.sum().float() * 0, boxes


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
