"""The choices and defaults of the format options, in a leaf module: the format table (:mod:`exporters.formats`)
and the format modules both read them, and neither has to import the other to do so."""

from __future__ import annotations

TORCHSCRIPT_METHODS: tuple[str, ...] = ("script", "trace")
ONNX_EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
ONNX_DEFAULT_OPSET = 18
OPENVINO_WEIGHTS: tuple[str, ...] = ("fp32", "fp16")
