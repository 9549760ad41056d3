"""Reduced-precision ONNX models made from the fp32 export with ``onnxruntime`` tools.

- ``int8_static``: QDQ, activations uint8 / weights int8 per channel, Conv and MatMul quantised,
  ranges calibrated (MinMax) on prepared training images (the same ``prepare`` as every row);
- ``int8_dynamic``: only the MatMul weights quantised, activations quantised on the fly;
- ``fp16``: weights and compute in float16, inputs and outputs kept float32;
- ``openvino_int8``: NNCF post-training quantisation of an OpenVINO IR (transformer preset), calibrated on
  the same prepared training images as ``int8_static``;
- ``executorch_int8`` / ``litert_int8``: PT2E post-training int8 of the eager wrapper (the XNNPACK quantizer /
  litert-torch's PT2E quantizer, matmuls only: see :data:`LITERT_INT8_OPS`; symmetric per-channel int8
  weights, int8 activations) calibrated on the same batches, prediction heads kept fp32, then lowered like the
  fp32 ``.pte`` / converted like the fp32 ``.tflite`` (the ``edge`` extra).

Each derived model keeps the source's detrtool metadata with its own content hash recorded anew
(:func:`exporters.onnx.restamp_onnx`), so loading it verifies it like any exported artifact.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import Tensor

from detr_core.atomic import temp_folder
from detr_core.errors import first_line
from exporters.onnx import restamp_onnx

logger = logging.getLogger(__name__)

STATIC_OPS = ("Conv", "MatMul")


class _Batches:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over (images, mask) batches."""

    def __init__(self, names: tuple[str, str], batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        self.names = names
        self._iter: Iterator[tuple[Tensor, Tensor]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._iter, None)
        if item is None:
            return None
        images, mask = item
        return {self.names[0]: images.numpy(), self.names[1]: mask.numpy()}


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs every tensor at INFO on the root logger; keep that out."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(previous)


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Only errors from logger ``name`` while the block runs. (Not ``nncf.set_log_level``: it also sets
    the level of every handler attached to NNCF's logger for good, pytest's capture handlers included.)"""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _input_names(path: Path) -> tuple[str, str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initialisers]
    return names[0], names[1]


def _preprocess(source: Path, out: Path) -> Path:
    """Shape inference and graph clean-up that quantisation expects; the source itself on failure."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
        return out
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation only
        logger.warning("quantisation pre-processing skipped: %s", first_line(exc))
        return source


def int8_static(source: Path, out: Path, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """Static QDQ int8 of ``source`` calibrated on ``batches`` of (images, mask)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with temp_folder("quantize") as tmp, _quiet_root_logger():
        prepared = _preprocess(source, Path(tmp) / "pre.onnx")
        reader = _Batches(_input_names(prepared), batches)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=list(STATIC_OPS), calibrate_method=CalibrationMethod.MinMax)
    restamp_onnx(out)


def int8_dynamic(source: Path, out: Path) -> None:
    """Dynamic int8 of the MatMul weights of ``source`` (activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with temp_folder("quantize") as tmp, _quiet_root_logger():
        prepared = _preprocess(source, Path(tmp) / "pre.onnx")
        quantize_dynamic(str(prepared), str(out), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    restamp_onnx(out)


def fp16(source: Path, out: Path) -> None:
    """float16 weights and compute; float32 inputs and outputs (casts at the graph's edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(out))
    restamp_onnx(out)


#: What each calibrated recipe does, part of its cache key: a change here makes cached artifacts anew.
RECIPES = {
    "int8-static": "ort quantize_static QDQ, uint8 activations, per-channel int8 weights, MinMax",
    "openvino-int8": "nncf transformer preset, prediction heads fp32",
    "executorch-int8": "pt2e XNNPACKQuantizer symmetric per-channel int8, prediction heads fp32",
    "litert-int8": "pt2e litert-torch PT2EQuantizer symmetric per-channel int8 static, matmuls only "
                   "(convolutions fp32), prediction heads fp32",
}

#: The prediction heads (``DETR.class_embed`` and the box MLP) kept fp32 by the PT2E recipes, as by NNCF's.
HEADS = ("class_embed", "bbox_embed")


def _xnnpack_quantisable(node) -> bool:
    """Whether the XNNPACK quantizer may annotate ``node``: not in a prediction head, and no 0-dim tensor in
    or out (the attention's scalar arithmetic: executorch 1.5.1's channels-last pass indexes a quantised
    scalar placeholder and fails)."""
    for path, _ in (node.meta.get("nn_module_stack") or {}).values():
        if set(str(path).split(".")) & set(HEADS):
            return False
    values = [n.meta.get("val") for n in (node, *node.all_input_nodes)]
    return not any(isinstance(v, Tensor) and v.dim() == 0 for v in values)


def _pt2e(module, quantizer, batches: list[tuple[Tensor, ...]], *, kwargs_names: tuple[str, ...] | None = None,
          fold: bool = True):
    """``module`` captured with ``torch.export``, observed on ``batches`` and converted (PT2E); with
    ``kwargs_names`` the inputs are passed by keyword (the LiteRT signature's names); ``fold=False`` keeps the
    weights' quantise ops in the graph (what litert-torch's converter reads)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    def call(m, batch):
        return m(**dict(zip(kwargs_names, batch, strict=True))) if kwargs_names else m(*batch)

    example = batches[0]
    args, kwargs = ((), dict(zip(kwargs_names, example, strict=True))) if kwargs_names else (tuple(example), {})
    graph = torch.export.export(module, args, kwargs, strict=False).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in batches:
            call(prepared, batch)
    return convert_pt2e(prepared, fold_quantize=fold)


def executorch_int8(model, source: Path, out: Path, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """PT2E int8 of ``model`` (XNNPACK quantizer, heads fp32) calibrated on ``batches``, lowered to a ``.pte``
    written atomically to ``out`` with ``source``'s metadata (checked like any load) and its own hash."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    from detr_core.atomic import atomic_write_bytes
    from exporters.edge_file import quiet_native, stamp
    from exporters.executorch import lower, verified_program
    from exporters.wrapper import wrap

    _, metadata = verified_program(source)
    batches = [tuple(b) for b in batches]
    wrapper = wrap(model.eval())
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(_xnnpack_quantisable)
    with quiet_native():
        converted = _pt2e(wrapper, quantizer, batches)
        program = torch.export.export(converted, batches[0], strict=False)
    extra = {**metadata.extra, "quantized": f"{RECIPES['executorch-int8']}, {len(batches)} calibration batches"}
    atomic_write_bytes(out, stamp(lower(program), replace(metadata, extra=extra)))


#: The PT2E patterns litert-int8 quantises: the matmuls. Convolutions stay fp32: through litert-converter 0.5.0
#: an int8 convolution moved the trained shapes model's logits by 5.5 (matmuls alone: 0.08; per-tensor weights
#: no better), and an int8 ``mul`` by frozen batch-norm's constant scale is refused by its ``uniform_dequantize``.
LITERT_INT8_OPS = ("linear", "addmm")


def litert_int8(model, source: Path, out: Path, batches: Iterable[tuple[Tensor, Tensor]], *,
                ops: tuple[str, ...] = LITERT_INT8_OPS) -> None:
    """PT2E int8 of ``model`` (litert-torch's PT2E quantizer, static; the :data:`LITERT_INT8_OPS`, heads fp32)
    calibrated on ``batches``, converted to a ``.tflite`` written atomically to ``out`` with ``source``'s
    metadata and its own hash."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    from detr_core.atomic import atomic_write_bytes
    from exporters.edge_file import quiet_native, stamp
    from exporters.litert import NamedOutputs, convert, verified_model
    from exporters.wrapper import wrap

    class Quantizer(PT2EQuantizer):
        """Only the ``ops`` patterns, never in a head."""

        STATIC_OPS = list(ops)

        def _annotate_all_static_patterns(self, model, quantization_config, filter_fn=None):
            return super()._annotate_all_static_patterns(model, quantization_config, _xnnpack_quantisable)

    _, metadata = verified_model(source)
    batches = [tuple(b) for b in batches]
    quantizer = Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    named = NamedOutputs(wrap(model.eval()), metadata.output_names).eval()
    with quiet_native():
        converted = _pt2e(named, quantizer, batches, kwargs_names=metadata.input_names, fold=False)
    payload = convert(None, batches[0], metadata, quant_config=QuantConfig(pt2e_quantizer=quantizer),
                      module=converted)
    extra = {**metadata.extra, "quantized": f"{RECIPES['litert-int8']}, {len(batches)} calibration batches"}
    atomic_write_bytes(out, stamp(payload, replace(metadata, extra=extra)))


def head_matmuls(model) -> list[str]:
    """Friendly names of the prediction heads' MatMuls (class_embed and the box MLP): those met walking
    back from the model's outputs before the decoder's last LayerNorm (an ``MVN`` op in the IR)."""
    found, seen = [], set()
    stack = [op for op in model.get_ordered_ops() if op.get_type_name() == "Result"]
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in seen or op.get_type_name() == "MVN":
            continue
        seen.add(op.get_friendly_name())
        if op.get_type_name() == "MatMul":
            found.append(op.get_friendly_name())
        stack += [value.get_source_output().get_node() for value in op.inputs()]
    return found


def openvino_int8(source: Path, out: Path, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """NNCF int8 of the IR ``source`` (checked like any load) calibrated on ``batches``; the pair written
    atomically to ``out`` (+ ``.bin``) with the source's metadata and its own content hash.

    The prediction heads stay fp32 (:func:`head_matmuls`): quantising them cost 5.34 AP on the trained
    shapes default (int8 heads: AP 56.50; fp32 heads: 61.37, eager 61.84), for 0.3 ms of 2.7 per image."""
    import nncf
    import openvino as ov

    from detr_core.atomic import atomic_write_bytes
    from exporters.openvino import RT_KEY, save_ir, stamped_ir, verified_ir, weights_path

    xml_text, blob, metadata = verified_ir(source)
    model = ov.Core().read_model(xml_text, ov.Tensor(np.frombuffer(blob, dtype=np.uint8)))
    samples = [[images.numpy(), mask.numpy()] for images, mask in batches]
    with _quiet_root_logger(), _quiet_logger("nncf"):
        quantised = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                  model_type=nncf.ModelType.TRANSFORMER,
                                  ignored_scope=nncf.IgnoredScope(names=head_matmuls(model)))
    quantised.set_rt_info("{}", [RT_KEY])
    text, weights = save_ir(quantised)
    extra = {**metadata.extra, "quantized": f"nncf {nncf.__version__} int8, transformer preset, fp32 heads, "
                                            f"{len(samples)} calibration batches"}
    pair = stamped_ir(text, weights, replace(metadata, extra=extra))
    atomic_write_bytes(weights_path(out), pair.companions[".bin"])
    atomic_write_bytes(out, pair.main)


def stamp_derivation(path: Path, record: dict[str, Any]) -> None:
    """Record ``record`` (how the artifact was derived: :func:`bench.artifacts.derivation`) as
    ``extra.derived_from`` in the sealed metadata of the derived ONNX file, OpenVINO IR, ``.pte`` or ``.tflite`` ``path``, its content
    hash recorded anew; the cache checks it before reusing the file."""
    if path.suffix in (".pte", ".tflite"):
        from detr_core.atomic import atomic_write_bytes
        from exporters.edge_file import stamp, verified
        from exporters.formats import format_for_path

        fmt = format_for_path(path).name
        payload, metadata = verified(path, kind=path.suffix, fmt=fmt)
        atomic_write_bytes(path, stamp(payload, replace(metadata, extra={**metadata.extra, "derived_from": record})))
        return
    if path.suffix == ".xml":
        from detr_core.atomic import atomic_write_bytes
        from exporters.openvino import stamped_ir, verified_ir

        xml_text, blob, metadata = verified_ir(path)
        pair = stamped_ir(xml_text, blob, replace(metadata, extra={**metadata.extra, "derived_from": record}))
        atomic_write_bytes(path, pair.main)
        return
    from detr_core.atomic import atomic_write_bytes
    from exporters.metadata import PROP_PREFIX

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    extra = json.loads(props.get(PROP_PREFIX + "extra", "{}")) or {}
    kept = [p for p in model.metadata_props if p.key != PROP_PREFIX + "extra"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=PROP_PREFIX + "extra", value=json.dumps({**extra, "derived_from": record}))
    atomic_write_bytes(path, model.SerializeToString())
    restamp_onnx(path)
