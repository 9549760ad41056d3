"""ExecuTorch artifacts (``.pte``): the export wrapper through ``torch.export`` (static canvas and batch, the
mask a live input) and ``executorch.exir.to_edge_transform_and_lower`` with the XNNPACK partitioner, then
``to_executorch()``. Run with ExecuTorch's Python runtime (``executorch.runtime``) on the CPU: XNNPACK runs
the convolutions, matmuls and most elementwise work; the rest (mask interpolation, positional encoding,
index/shape ops) runs in ExecuTorch's portable kernels.

Inputs and outputs are positional in a ``.pte``; their names and order are the metadata's (``images``,
``mask``[, ``orig_sizes``] -> ``pred_logits``, ``pred_boxes``, ...), checked against the program's counts.
Metadata and content hash: appended after the program (:mod:`exporters.edge_file`).

Loading, in order, before the runtime sees a byte: the footer and the content hash
(:func:`exporters.edge_file.verified`), then the program read with ExecuTorch's own flatbuffer schema
(:func:`check_program`): the ``ET12`` identifier, an extended header whose segments lie inside the file,
one ``forward`` method with the metadata's input and output counts, only the ``XnnpackBackend`` delegate and
only the portable operators detrtool's exports use (:data:`OPERATORS`), no data kept outside the file. The
runtime then verifies the flatbuffer itself (``Verification.InternalConsistency``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from exporters.artifact_file import ArtifactError, first_line
from exporters.backend import Backend
from exporters.edge_file import quiet_native, read_edge_metadata, require, stamp, verified
from exporters.metadata import ArtifactMetadata

FORMAT, KIND = "executorch", ".pte"
MODULES = ("executorch",)
DELEGATES = frozenset({"XnnpackBackend"})
#: The portable operators (``name.overload``) left outside the XNNPACK delegate by detrtool's exports: DETR
#: and DETRsegm, raw or with post-processing, fp32 or int8 (PT2E). Anything else in a ``.pte`` is refused.
OPERATORS = frozenset({
    "aten::addmm.out", "aten::any.dims_out", "aten::any.out", "aten::arange.start_out", "aten::bitwise_not.out",
    "aten::bmm.out", "aten::cat.out", "aten::clamp.out", "aten::clone.out", "aten::cumsum.out", "aten::div.out",
    "aten::div.out_mode", "aten::eq.Scalar_out", "aten::expand_copy.out", "aten::full.out",
    "aten::full_like.out", "aten::gather.out", "aten::index.Tensor_out", "aten::index_select.out",
    "aten::le.Scalar_out", "aten::log.out", "aten::logical_not.out", "aten::lt.Scalar_out", "aten::native_group_norm.out",
    "aten::max.dim_max", "aten::mul.Scalar_out", "aten::mul.out", "aten::native_layer_norm.out",
    "aten::permute_copy.out", "aten::pow.Scalar_out", "aten::scalar_tensor.out", "aten::select_copy.int_out",
    "aten::sigmoid.out", "aten::slice_copy.Tensor_out", "aten::softmax.int_out", "aten::split_with_sizes_copy.out",
    "aten::squeeze_copy.dims_out", "aten::stack.out", "aten::sub.out", "aten::sum.IntList_out",
    "aten::unbind_copy.int_out", "aten::unsqueeze_copy.out", "aten::upsample_bilinear2d.vec_out",
    "aten::upsample_nearest2d.vec_out", "aten::view_copy.out", "aten::where.self_out", "aten::add.out",
    "aten::relu.out", "aten::_softmax.out", "aten::amax.out", "aten::exp.out", "aten::convolution.out",
    "aten::sin.out", "aten::cos.out", "aten::repeat.out", "aten::constant_pad_nd.out", "aten::_to_copy.out",
    "dim_order_ops::_to_dim_order_copy.out", "dim_order_ops::_clone_dim_order.out",
    "executorch_prim::et_view.default", "quantized_decomposed::quantize_per_tensor.out",
    "quantized_decomposed::dequantize_per_tensor.out", "quantized_decomposed::dequantize_per_channel.out",
    "quantized_decomposed::quantize_per_tensor.tensor_out", "quantized_decomposed::dequantize_per_tensor.tensor_out",
})
#: Bounds on what the reader walks in a file (detrtool's programs use a few hundred of each).
_MAX_ENTRIES = 1 << 16


def lower(program: torch.export.ExportedProgram) -> bytes:
    """An ``ExportedProgram`` -> edge dialect with XNNPACK partitions -> ``.pte`` bytes."""
    with quiet_native():  # the imports log too
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        _quantized_kernels()
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        return bytes(edge.to_executorch().buffer)


def _quantized_kernels() -> None:
    """Register ExecuTorch's quantized kernels (``quantized_decomposed::*.out``, shipped in the package): an
    int8 program keeps a few (de)quantise ops outside the delegate."""
    import executorch.kernels.quantized  # noqa: F401


def export_executorch(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], *,
                      metadata: ArtifactMetadata) -> bytes:
    """``wrapper`` -> ``torch.export`` (static shapes) -> XNNPACK-lowered ``.pte`` with ``metadata`` and the
    content hash appended."""
    require(FORMAT, *MODULES)
    with quiet_native():
        program = torch.export.export(wrapper, example_inputs, strict=False)
    return stamp(lower(program), metadata)


def _count(n: int, what: str, path: Path) -> int:
    if not 0 <= n <= _MAX_ENTRIES:
        raise ArtifactError(f"{path}: the program lists {n} {what}; refusing it")
    return n


def _extended_header(payload: bytes, path: Path) -> None:
    """The ``eh00`` header at byte 8: program and segment data inside the file."""
    if len(payload) < 40 or payload[4:8] != b"ET12":
        raise ArtifactError(f"{path}: not an ExecuTorch program (no ET12 identifier)")
    if payload[8:12] != b"eh00":
        return
    length, program_size, base, data_size = struct.unpack_from("<IQQQ", payload, 12)
    if length < 24 or program_size > len(payload) or base > len(payload) or base + data_size > len(payload):
        raise ArtifactError(f"{path}: the program header points outside the file ({program_size}, {base}+"
                            f"{data_size} of {len(payload)} bytes)")


def check_program(payload: bytes, path: Path, metadata: ArtifactMetadata) -> None:
    """What the runtime would execute (see module doc); one :class:`ArtifactError` line otherwise."""
    _extended_header(payload, path)
    try:
        found = _walk(payload, path)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer: struct.error, IndexError, ...
        raise ArtifactError(f"{path}: damaged ExecuTorch program ({first_line(exc) or type(exc).__name__})") from None
    methods, delegates, operators, inputs, outputs, external = found
    if methods != ["forward"]:
        raise ArtifactError(f"{path}: the program's methods are {methods}; detrtool writes one, forward")
    if (inputs, outputs) != (len(metadata.input_names), len(metadata.output_names)):
        raise ArtifactError(f"{path}: the program takes {inputs} inputs and returns {outputs} outputs; the metadata "
                            f"names {len(metadata.input_names)} and {len(metadata.output_names)}")
    foreign = sorted(set(delegates) - DELEGATES)
    if foreign:
        raise ArtifactError(f"{path}: the program calls delegate {foreign[0]!r}; detrtool writes only "
                            f"{', '.join(sorted(DELEGATES))}, refusing it")
    unknown = sorted(set(operators) - OPERATORS)
    if unknown:
        raise ArtifactError(f"{path}: the program runs operator {unknown[0]!r}, which detrtool's exports never "
                            "use; refusing it")
    if external:
        raise ArtifactError(f"{path}: the program keeps data outside the file; detrtool .pte files are "
                            "self-contained, refusing it")


def _schema(name: str) -> type:
    """A table class of ExecuTorch's generated flatbuffer reader (``executorch_flatbuffer.<name>``)."""
    import importlib

    return getattr(importlib.import_module(f"executorch.exir._serialize.generated.executorch_flatbuffer.{name}"), name)


#: vtable slots of the tables read (program.fbs, as in the generated readers): Program.execution_plan,
#: Program.segments, Program.named_data; ExecutionPlan.operators, ExecutionPlan.delegates.
_PLANS, _SEGMENTS, _NAMED, _OPERATORS, _DELEGATES = 6, 12, 18, 16, 18


def _tables(parent, slot: int, name: str, path: Path) -> list:
    """The tables of the vector at ``slot`` of ``parent``. (The generated accessors of vectors of tables
    cannot be called in executorch 1.5.1: a circular import leaves them a module where a class belongs.)"""
    tab = parent._tab
    offset = tab.Offset(slot)
    if not offset:
        return []
    start, cls = tab.Vector(offset), _schema(name)
    items = []
    for j in range(_count(tab.VectorLen(offset), name, path)):
        obj = cls()
        obj.Init(tab.Bytes, tab.Indirect(start + 4 * j))
        items.append(obj)
    return items


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def _walk(payload: bytes, path: Path):
    program = _schema("Program").GetRootAs(payload, 0)
    methods, delegates, operators, inputs, outputs = [], [], [], 0, 0
    for plan in _tables(program, _PLANS, "ExecutionPlan", path):
        methods.append(_text(plan.Name()))
        inputs, outputs = plan.InputsLength(), plan.OutputsLength()
        delegates += [_text(d.Id()) for d in _tables(plan, _DELEGATES, "BackendDelegate", path)]
        for op in _tables(plan, _OPERATORS, "Operator", path):
            name, overload = _text(op.Name()), _text(op.Overload())
            operators.append(f"{name}.{overload}" if overload else name)
    segments = _count(program.SegmentsLength(), "segments", path)
    external = any(not 0 <= d.SegmentIndex() < segments for d in _tables(program, _NAMED, "NamedData", path))
    return methods, delegates, operators, inputs, outputs, external


def read_executorch_metadata(path: Path) -> ArtifactMetadata:
    """From the footer, without reading the program."""
    return read_edge_metadata(path, kind=KIND, fmt=FORMAT)


def verified_program(path: Path) -> tuple[bytes, ArtifactMetadata]:
    """The checked ``.pte`` payload (hash, then :func:`check_program`) and its metadata."""
    require(FORMAT, *MODULES)
    payload, metadata = verified(path, kind=KIND, fmt=FORMAT)
    check_program(payload, path, metadata)
    return payload, metadata


def set_threads(threads: int | None) -> None:
    """The XNNPACK thread pool's size (process-wide in ExecuTorch)."""
    if threads:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(int(threads))


def load_executorch(path: Path, *, device: str = "cpu", threads: int | None = None, **_: object) -> Backend:
    """The checked program's ``forward`` in ExecuTorch's runtime (CPU); outputs copied out of its buffers."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"detrtool runs ExecuTorch programs on the CPU only, not {device!r}")
    payload, metadata = verified_program(path)
    try:
        with quiet_native():
            from executorch.runtime import Runtime, Verification

            _quantized_kernels()
            set_threads(threads)
            program = Runtime.get().load_program(payload, verification=Verification.InternalConsistency)
            method = program.load_method("forward")
    except Exception as exc:  # noqa: BLE001 - the runtime's RuntimeError: one line
        raise ArtifactError(f"{path}: ExecuTorch cannot load the program ({first_line(exc)})") from None
    if method is None:
        raise ArtifactError(f"{path}: the program has no forward method")

    def run(inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        try:
            outputs = method.execute([t.detach().cpu().contiguous() for t in inputs])
        except RuntimeError as exc:  # the runtime's error code: one line naming the file
            raise RuntimeError(f"{path}: ExecuTorch failed to run the program ({first_line(exc)})") from None
        return [out.clone() for out in outputs]

    return Backend(run=run, native=program, device="cpu", metadata=metadata)

