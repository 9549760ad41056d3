"""ONNX artifacts: the torch.export-based exporter (``dynamo``, opset >= 18) or the TorchScript-based
one (``legacy``); checked with ``onnx.checker``, metadata in ``metadata_props``. Loaded with
``onnxruntime.InferenceSession``.

At opset 17 the dynamo exporter writes a model that ONNX Runtime refuses, hence its floor of 18.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import external_data_helper
from torch import Tensor, nn

from detr_core.atomic import atomic_write_bytes
from exporters.artifact_file import ArtifactError, check_sealed, first_line, read_artifact
from exporters.backend import Backend
from exporters.format_options import ONNX_DEFAULT_OPSET as DEFAULT_OPSET
from exporters.format_options import ONNX_EXPORTERS as EXPORTERS
from exporters.metadata import HASH_FIELD, PROP_PREFIX, ArtifactMetadata, MetadataError, props_fields, seal
from exporters.wrapper import dynamic_axes, dynamic_shapes

logger = logging.getLogger(__name__)

MIN_OPSET: dict[str, int] = {"dynamo": 18, "legacy": 14}


class OpsetError(ValueError):
    """An opset the chosen exporter cannot produce a working model for."""


def check_exporter_options(*, exporter: str, opset: int, **_: object) -> None:
    """One clear error for an unknown exporter or an opset below its floor."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    if int(opset) < MIN_OPSET[exporter]:
        raise OpsetError(f"opset {opset} is too low for the {exporter} ONNX exporter (minimum "
                         f"{MIN_OPSET[exporter]}{'; at 17 ONNX Runtime refuses its model' if exporter == 'dynamo' else ''})")


def export_onnx(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], *, metadata: ArtifactMetadata,
                exporter: str = "dynamo", opset: int = DEFAULT_OPSET) -> bytes:
    """``wrapper`` as one self-contained ONNX model (in memory), checked, with the metadata props and the
    content hash. Static shapes, or, with ``metadata.dynamic``, symbolic ``batch``, ``height`` and ``width``
    (dynamo: ``dynamic_shapes`` with ``torch.export.Dim``; legacy: ``dynamic_axes``)."""
    check_exporter_options(exporter=exporter, opset=opset)
    names = {"input_names": list(metadata.input_names), "output_names": list(metadata.output_names)}
    with _quiet():
        if exporter == "dynamo":
            if metadata.dynamic:
                names["dynamic_shapes"] = dynamic_shapes(metadata.input_names, metadata.dynamic_limits)
            model = torch.onnx.export(wrapper, example_inputs, dynamo=True, opset_version=int(opset),
                                      verbose=False, **names).model_proto
        else:
            if metadata.dynamic:
                names["dynamic_axes"] = dynamic_axes(metadata.input_names, metadata.output_names)
            buffer = io.BytesIO()
            torch.onnx.export(wrapper, example_inputs, buffer, dynamo=False, opset_version=int(opset),
                              do_constant_folding=True, **names)
            model = onnx.load_model_from_string(buffer.getvalue())
    onnx.checker.check_model(model, full_check=True)
    _set_props(model, metadata.sealed(onnx_digest(model)).to_props())
    return model.SerializeToString()


def onnx_digest(model: onnx.ModelProto) -> str:
    """sha256 of ``model`` without its ``detrtool.*`` metadata props, serialised deterministically."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    kept = [p for p in bare.metadata_props if not p.key.startswith(PROP_PREFIX)]
    del bare.metadata_props[:]
    bare.metadata_props.extend(kept)
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def restamp_onnx(path: Path) -> None:
    """Record the hash (content and metadata) of an ONNX file that a tool changed after export
    (quantisation, fp16), when it carries detrtool metadata; rewritten atomically."""
    model = _parse(read_artifact(path), path)
    fields = _fields(model, path)
    if "format" not in fields:
        return
    _set_props(model, {PROP_PREFIX + HASH_FIELD: json.dumps(seal(onnx_digest(model), fields))})
    atomic_write_bytes(path, model.SerializeToString())


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warn about tracing; keep that out of the user's terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _set_props(model: onnx.ModelProto, props: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def _parse(data: bytes, path: Path) -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX model
        raise ArtifactError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None


def _fields(model: onnx.ModelProto, path: Path) -> dict:
    """The ``detrtool.*`` props as ``{field: value}``; a prop twice or a value not JSON names the file."""
    try:
        return props_fields([(p.key, p.value) for p in model.metadata_props])
    except ValueError as exc:
        raise MetadataError(f"{path}: {first_line(exc)}") from None


def _metadata(model: onnx.ModelProto, path: Path) -> ArtifactMetadata:
    fields = _fields(model, path)
    if not fields:
        raise MetadataError(f"{path}: no detrtool metadata in the artifact (was it exported by detrtool?)")
    try:
        return ArtifactMetadata.from_dict(fields)
    except (ValueError, TypeError) as exc:
        raise MetadataError(f"{path}: {first_line(exc)}") from None


def read_onnx_metadata(path: Path) -> ArtifactMetadata:
    return _metadata(_parse(read_artifact(path), path), path)


def _check_self_contained(model: onnx.ModelProto, path: Path) -> None:
    """detrtool writes one self-contained file: a tensor stored outside it (external data, which could
    name any file on disk) is refused before ONNX Runtime is asked to read it."""
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ArtifactError(f"{path}: tensor {tensor.name!r} is stored outside the file ({location!r}); "
                                "detrtool ONNX artifacts are self-contained, refusing to read it")


def _verify(model: onnx.ModelProto, path: Path) -> ArtifactMetadata:
    """The metadata, once the recorded hash matches the model's content and every ``detrtool.*`` prop."""
    fields = _fields(model, path)
    if not fields:
        raise MetadataError(f"{path}: no detrtool metadata in the artifact (was it exported by detrtool?)")
    check_sealed(path, fields=fields, content=onnx_digest(model))
    return _metadata(model, path)


def onnx_providers(device: str) -> list[str]:
    """Execution providers for ``device``: CUDA (then CPU) when asked and available, else CPU."""
    import onnxruntime as ort

    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_onnx(path: Path, *, device: str = "cpu", providers: Sequence[str] | None = None,
              session_options=None, **_: object) -> Backend:
    """An ``onnxruntime.InferenceSession``; tensors go in and come out on the CPU (numpy in between)."""
    import onnxruntime as ort

    data = read_artifact(path)
    model = _parse(data, path)
    _check_self_contained(model, path)
    metadata = _verify(model, path)
    del model
    providers = list(providers or onnx_providers(device))
    try:
        session = ort.InferenceSession(data, sess_options=session_options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's Fail/InvalidGraph/...: one line
        raise ArtifactError(f"{path}: ONNX Runtime cannot load the model ({first_line(exc)})") from None
    input_names = [i.name for i in session.get_inputs()]

    def run(inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(input_names, inputs, strict=True)}
        return [torch.from_numpy(np.asarray(out)) for out in session.run(None, feed)]

    return Backend(run=run, native=session, device="cpu", metadata=metadata)
