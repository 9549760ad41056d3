"""ONNX artifacts: the torch.export-based exporter (``dynamo``, opset >= 18) or the TorchScript-based
one (``legacy``); checked with ``onnx.checker``, metadata in ``metadata_props``. Loaded with
``onnxruntime.InferenceSession``.

At opset 17 the dynamo exporter writes a model that ONNX Runtime refuses, hence its floor of 18.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from exporters.backend import Backend
from exporters.metadata import ArtifactMetadata, MetadataError

logger = logging.getLogger(__name__)

EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
MIN_OPSET: dict[str, int] = {"dynamo": 18, "legacy": 14}
DEFAULT_OPSET = 18


class OpsetError(ValueError):
    """An opset the chosen exporter cannot produce a working model for."""


def check_exporter_options(*, exporter: str, opset: int, **_: object) -> None:
    """One clear error for an unknown exporter or an opset below its floor."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    if int(opset) < MIN_OPSET[exporter]:
        raise OpsetError(f"opset {opset} is too low for the {exporter} ONNX exporter (minimum "
                         f"{MIN_OPSET[exporter]}{'; at 17 ONNX Runtime refuses its model' if exporter == 'dynamo' else ''})")


def export_onnx(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], path: Path, *,
                metadata: ArtifactMetadata, exporter: str = "dynamo", opset: int = DEFAULT_OPSET) -> None:
    """Write ``wrapper`` with static shapes to ``path`` (one file), check it, add the metadata props."""
    check_exporter_options(exporter=exporter, opset=opset)
    names = {"input_names": list(metadata.input_names), "output_names": list(metadata.output_names)}
    with _quiet():
        if exporter == "dynamo":
            torch.onnx.export(wrapper, example_inputs, str(path), dynamo=True, opset_version=int(opset),
                              external_data=False, verbose=False, **names)
        else:
            torch.onnx.export(wrapper, example_inputs, str(path), dynamo=False, opset_version=int(opset),
                              do_constant_folding=True, **names)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    _set_props(model, metadata.to_props())
    onnx.save(model, str(path))


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


def read_onnx_metadata(path: Path) -> ArtifactMetadata:
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        return ArtifactMetadata.from_props(props)
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}") from None


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

    session = ort.InferenceSession(str(path), sess_options=session_options,
                                   providers=list(providers or onnx_providers(device)))
    input_names = [i.name for i in session.get_inputs()]

    def run(inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(input_names, inputs)}
        return [torch.from_numpy(np.asarray(out)) for out in session.run(None, feed)]

    return Backend(run=run, native=session, device="cpu")
