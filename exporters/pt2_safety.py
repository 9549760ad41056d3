"""The gate every ``.pt2`` passes before ``torch.export.load`` sees it: no code from the file may run.

``torch.export.load`` (torch 2.14) runs code from the archive in several places: weights and tensor
constants marked ``use_pickle`` are unpickled with ``weights_only=False``; sample inputs fall back to
``weights_only=False`` when the weights-only unpickler refuses them; ``custom_obj_*`` / ``opaque_obj_*``
constants go through ``torch._C._pickle_load_obj`` / ``pickle.loads``; ``data/aotinductor/`` holds native
libraries that are loaded; the program's ``guards_code`` strings are ``exec``'d by
``ExportedProgram.module()``; symbolic-shape expressions go through ``sympy.sympify`` (``eval``); node
targets name any attribute path under ``torch``, ``operator`` or ``math``; and a file without the
archive layout falls back to the pre-2.8 reader.

:func:`check_pt2` accepts only what detrtool itself writes: one root folder holding the known members;
weight and constant payloads stored raw (a pickled one must load with PyTorch's weights-only unpickler);
sample inputs that load with the weights-only unpickler; guards, symbolic-shape expressions and ranges
(dynamic exports) only when every string matches the strict grammar of :mod:`exporters.sym_grammar`
(sympy constructors of integers and symbols; integer arithmetic over input sizes), parsed with
:func:`ast.parse` before torch sees it; and node targets that :mod:`exporters.op_policy` allows (the ATen
operators a DETR needs, ``operator`` arithmetic over sizes; never ``aten.from_file``, ``aten.save`` or any
other operator that touches files or the process). Anything else is refused in one
:class:`UnsafeArtifactError` line naming the file and the member.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from detr_core.checkpoint_state import load_failure
from exporters.artifact_file import ArtifactError, first_line, member_suffix, read_member
from exporters.op_policy import allows_target
from exporters.sym_grammar import GrammarError, check_guard, check_range, check_sym_expr

ALLOWED_MEMBERS = re.compile(
    r"(version|byteorder|archive_format|archive_version|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/model\.pt|extra/[\w.-]+)")
PAYLOAD_NAME = {"data/weights/": re.compile(r"weight_\d+"), "data/constants/": re.compile(r"tensor_\d+")}


class UnsafeArtifactError(ArtifactError):
    """A ``.pt2`` holding something that could run code when loaded."""


def check_pt2(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse (:class:`UnsafeArtifactError`) anything in ``archive`` but what detrtool writes (see module doc)."""
    root = _check_layout(archive.namelist(), path)
    for config, directory in (("data/weights/model_weights_config.json", "data/weights/"),
                              ("data/constants/model_constants_config.json", "data/constants/")):
        _check_payloads(archive, root, config, directory, path)
    _check_weights_only(archive, f"{root}/data/sample_inputs/model.pt", path, optional=True)
    _check_program(archive, f"{root}/models/model.json", path)


def _refuse(path: Path, member: str, why: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(f"{path}: refused to load: archive member {member} {why}; "
                               "a detrtool .pt2 never holds that")


def _check_layout(names: list[str], path: Path) -> str:
    """Every member under one root folder and in the allowed list, no name twice; returns the root."""
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[0]
        raise _refuse(path, twice, "appears twice")
    roots = {n.split("/", 1)[0] for n in names}
    for name in names:
        if "/" not in name or len(roots) > 1 or not ALLOWED_MEMBERS.fullmatch(member_suffix(name)):
            raise _refuse(path, name, "is not part of the torch.export archive layout detrtool writes")
    if not names:
        raise ArtifactError(f"{path}: empty zip archive, not a .pt2 artifact")
    return roots.pop()


def _json_member(archive: zipfile.ZipFile, member: str, path: Path) -> Any:
    if member not in archive.namelist():
        raise ArtifactError(f"{path}: not a torch.export artifact (no {member})")
    try:
        return json.loads(read_member(archive, member, path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: damaged archive member {member} ({first_line(exc)})") from None


def _check_payloads(archive: zipfile.ZipFile, root: str, config: str, directory: str, path: Path) -> None:
    """Raw payloads only, named ``weight_N``/``tensor_N``; a pickled one must load weights-only."""
    entries = _json_member(archive, f"{root}/{config}", path).get("config", {})
    for fqn, meta in entries.items() if isinstance(entries, dict) else ():
        name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
        member = f"{root}/{directory}{name}"
        if not PAYLOAD_NAME[directory].fullmatch(name):
            raise _refuse(path, member, f"(for {fqn}) is a pickled object, not a tensor")
        if meta.get("use_pickle"):
            _check_weights_only(archive, member, path)


def _check_weights_only(archive: zipfile.ZipFile, member: str, path: Path, *, optional: bool = False) -> None:
    """``member`` must load with PyTorch's weights-only unpickler (the one that runs no code)."""
    if optional and member not in archive.namelist():
        return
    data = read_member(archive, member, path) if member in archive.namelist() else b""
    if optional and not data:
        return
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler refuses, the file is refused
        raise _refuse(path, member, f"is a pickle that could run code ({load_failure(exc)})") from None


def _check_program(archive: zipfile.ZipFile, member: str, path: Path) -> None:
    """Guards and symbolic shapes only in the strict grammar, only operator targets that cannot run
    file-supplied code."""
    program = _json_member(archive, member, path)
    if not isinstance(program, dict):
        raise ArtifactError(f"{path}: damaged archive member {member} (not a JSON object)")
    _check_symbolic(program, member, path)
    for key, value in _strings(program):
        if key in ("target", "as_operator") and not allows_target(value):
            raise _refuse(path, member, f"calls {value[:60]!r}, which detrtool's op policy does not allow")


def _check_symbolic(program: dict, member: str, path: Path) -> None:
    """Guards, symbolic expressions and ranges of a dynamic program: each must match the strict grammar
    of :mod:`exporters.sym_grammar` (torch would ``exec`` / ``sympify`` them)."""
    guards = program.get("guards_code") or []
    ranges = program.get("range_constraints") or {}
    if not isinstance(guards, list) or not isinstance(ranges, dict):
        raise _refuse(path, member, "has guards or ranges that are not a list / mapping")
    checks = [(check_guard, "guards code", g) for g in guards]
    checks += [(check_sym_expr, "symbolic expression", v) for k, v in _strings(program) if k == "expr_str"]
    for check, what, text in checks:
        try:
            check(text)
        except GrammarError as exc:
            raise _refuse(path, member, f"has {what} {str(text)[:40]!r} that {exc}") from None
    for name, bounds in ranges.items():
        try:
            check_range(name, bounds)
        except GrammarError as exc:
            raise _refuse(path, member, str(exc)) from None


def _strings(node: Any, key: str = ""):
    """Every (key, string) pair in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node
