"""Reduced-precision ONNX models made from the fp32 export with ``onnxruntime`` tools.

- ``int8_static``: QDQ, activations uint8 / weights int8 per channel, Conv and MatMul quantised,
  ranges calibrated (MinMax) on prepared training images (the same ``prepare`` as every row);
- ``int8_dynamic``: only the MatMul weights quantised, activations quantised on the fly;
- ``fp16``: weights and compute in float16, inputs and outputs kept float32;
- ``openvino_int8``: NNCF post-training quantisation of an OpenVINO IR (transformer preset), calibrated on
  the same prepared training images as ``int8_static``.

Each derived model keeps the source's detrtool metadata with its own content hash recorded anew
(:func:`exporters.onnx.restamp_onnx`), so loading it verifies it like any exported artifact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import Tensor

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

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        prepared = _preprocess(source, Path(tmp) / "pre.onnx")
        reader = _Batches(_input_names(prepared), batches)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=list(STATIC_OPS), calibrate_method=CalibrationMethod.MinMax)
    restamp_onnx(out)


def int8_dynamic(source: Path, out: Path) -> None:
    """Dynamic int8 of the MatMul weights of ``source`` (activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
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
}


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
    ``extra.derived_from`` in the sealed metadata of the derived ONNX file or OpenVINO IR ``path``, its content
    hash recorded anew; the cache checks it before reusing the file."""
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
