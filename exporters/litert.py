"""LiteRT artifacts (``.tflite``): the export wrapper converted with ``litert_torch.convert`` (torch.export
underneath: static canvas and batch, the mask a live input), run with LiteRT's interpreter
(``ai_edge_litert.interpreter``, XNNPACK delegate on the CPU).

The model's one signature (``serving_default``) takes the metadata's inputs by name (``images``, ``mask``[,
``orig_sizes``]) and returns its outputs by name (``pred_logits``, ``pred_boxes``, ...): the wrapper is
converted with keyword inputs and a dict of outputs. LiteRT has no 64-bit integers by default:
``orig_sizes`` goes in and ``labels`` comes out as int32, cast at the runtime's edge. Metadata and
content hash: appended after the flatbuffer (:mod:`exporters.edge_file`).

Loading, in order, before the interpreter sees a byte: the footer and the content hash, then the model read
with LiteRT's own schema reader (``ai_edge_litert.schema_py_generated``, :func:`check_model`): the ``TFL3``
identifier, no custom operator (a custom op is code the interpreter would look up by name, e.g. Flex ops
that run TensorFlow), every buffer stored past the flatbuffer (``offset``/``size``) inside the file, one
signature with the metadata's names. The interpreter then verifies the flatbuffer itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from exporters.artifact_file import ArtifactError, first_line
from exporters.backend import Backend
from exporters.edge_file import quiet_native, read_edge_metadata, require, stamp, verified
from exporters.metadata import ArtifactMetadata

FORMAT, KIND = "litert", ".tflite"
EXPORT_MODULES, RUN_MODULES = ("litert_torch", "ai_edge_litert"), ("ai_edge_litert",)
SIGNATURE = "serving_default"
#: Outputs whose eager dtype LiteRT narrows (int64 -> int32); cast back after each run.
INT64_OUTPUTS = frozenset({"labels"})
_MAX_ENTRIES = 1 << 16


class NamedOutputs(nn.Module):
    """The wrapper with its outputs as a dict keyed by the metadata's names (the converter names the
    signature's outputs after the keys)."""

    def __init__(self, wrapper: nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.wrapper, self.output_names = wrapper, tuple(output_names)

    def forward(self, images: Tensor, mask: Tensor, orig_sizes: Tensor | None = None) -> dict[str, Tensor]:
        outputs = self.wrapper(images, mask) if orig_sizes is None else self.wrapper(images, mask, orig_sizes)
        return dict(zip(self.output_names, outputs, strict=True))


def convert(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], metadata: ArtifactMetadata,
            quant_config=None, module: nn.Module | None = None) -> bytes:
    """The ``.tflite`` flatbuffer of ``wrapper`` (or of ``module``, an already quantised graph taking the
    same keyword inputs and returning the same dict)."""
    named = module if module is not None else NamedOutputs(wrapper, metadata.output_names).eval()
    kwargs = dict(zip(metadata.input_names, example_inputs, strict=True))
    with quiet_native():
        import litert_torch

        model = litert_torch.convert(named, sample_kwargs=kwargs, quant_config=quant_config)
        return bytes(model.model_content())


def export_litert(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], *, metadata: ArtifactMetadata) -> bytes:
    """``wrapper`` -> ``litert_torch.convert`` -> ``.tflite`` with ``metadata`` and the content hash appended."""
    require(FORMAT, *EXPORT_MODULES)
    return stamp(convert(wrapper, example_inputs, metadata), metadata)


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def _count(n: int, what: str, path: Path) -> int:
    if not 0 <= n <= _MAX_ENTRIES:
        raise ArtifactError(f"{path}: the model lists {n} {what}; refusing it")
    return n


def _walk(payload: bytes, path: Path):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(payload, 0)
    custom = []
    for i in range(_count(model.OperatorCodesLength(), "operator codes", path)):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM or code.CustomCode():
            custom.append(_text(code.CustomCode()) or "(unnamed)")
    outside = []
    for i in range(_count(model.BuffersLength(), "buffers", path)):
        buffer = model.Buffers(i)
        offset, size = buffer.Offset(), buffer.Size()
        if offset > 1 and (offset + size > len(payload) or offset < 8):
            outside.append((i, offset, size))
    signatures = []
    for i in range(_count(model.SignatureDefsLength(), "signatures", path)):
        sig = model.SignatureDefs(i)
        signatures.append((_text(sig.SignatureKey()),
                           [_text(sig.Inputs(j).Name()) for j in range(_count(sig.InputsLength(), "inputs", path))],
                           [_text(sig.Outputs(j).Name()) for j in range(_count(sig.OutputsLength(), "outputs", path))]))
    return custom, outside, signatures


def check_model(payload: bytes, path: Path, metadata: ArtifactMetadata) -> None:
    """What the interpreter would run (see module doc); one :class:`ArtifactError` line otherwise."""
    if len(payload) < 16 or payload[4:8] != b"TFL3":
        raise ArtifactError(f"{path}: not a LiteRT model (no TFL3 identifier)")
    try:
        custom, outside, signatures = _walk(payload, path)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer: struct.error, IndexError, ...
        raise ArtifactError(f"{path}: damaged LiteRT model ({first_line(exc) or type(exc).__name__})") from None
    if custom:
        raise ArtifactError(f"{path}: the model uses custom operator {custom[0]!r}; detrtool .tflite files use "
                            "builtin operators only, refusing it")
    if outside:
        index, offset, size = outside[0]
        raise ArtifactError(f"{path}: buffer {index} points outside the file (offset {offset} + size {size} of "
                            f"{len(payload)} bytes); refusing it")
    if len(signatures) != 1 or signatures[0][0] != SIGNATURE:
        raise ArtifactError(f"{path}: the model's signatures are {[s[0] for s in signatures]}; detrtool writes "
                            f"one, {SIGNATURE}")
    _, inputs, outputs = signatures[0]
    if sorted(inputs) != sorted(metadata.input_names) or sorted(outputs) != sorted(metadata.output_names):
        raise ArtifactError(f"{path}: the model's signature {inputs} -> {outputs} is not the metadata's "
                            f"{list(metadata.input_names)} -> {list(metadata.output_names)}")


def read_litert_metadata(path: Path) -> ArtifactMetadata:
    """From the footer, without reading the model."""
    return read_edge_metadata(path, kind=KIND, fmt=FORMAT)


def verified_model(path: Path) -> tuple[bytes, ArtifactMetadata]:
    """The checked ``.tflite`` payload (hash, then :func:`check_model`) and its metadata."""
    require(FORMAT, *RUN_MODULES)
    payload, metadata = verified(path, kind=KIND, fmt=FORMAT)
    check_model(payload, path, metadata)
    return payload, metadata


def load_litert(path: Path, *, device: str = "cpu", threads: int | None = None, **_: object) -> Backend:
    """The checked model in LiteRT's interpreter (CPU, XNNPACK); tensors in and out on the CPU."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"detrtool runs LiteRT models on the CPU only, not {device!r}")
    payload, metadata = verified_model(path)
    try:
        with quiet_native():
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_content=payload, num_threads=int(threads) if threads else None)
            interpreter.allocate_tensors()  # the XNNPACK delegate is applied (and logs) here
            runner = interpreter.get_signature_runner(SIGNATURE)
    except Exception as exc:  # noqa: BLE001 - the interpreter's ValueError/RuntimeError: one line
        raise ArtifactError(f"{path}: LiteRT cannot load the model ({first_line(exc)})") from None
    details = runner.get_input_details()
    dtypes = {name: details[name]["dtype"] for name in metadata.input_names}

    def run(inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()).astype(dtypes[name], copy=False)
                for name, t in zip(metadata.input_names, inputs, strict=True)}
        try:
            results = runner(**feed)
        except (RuntimeError, ValueError) as exc:  # the interpreter's error: one line naming the file
            raise RuntimeError(f"{path}: LiteRT failed to run the model ({first_line(exc)})") from None
        outputs = []
        for name in metadata.output_names:
            out = torch.from_numpy(np.array(results[name], copy=True))
            outputs.append(out.to(torch.int64) if name in INT64_OUTPUTS else out)
        return outputs

    return Backend(run=run, native=interpreter, device="cpu", metadata=metadata)
