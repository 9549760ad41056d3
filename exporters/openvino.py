"""OpenVINO IR artifacts: ``model.xml`` (the graph) + ``model.bin`` (raw weights), converted with
``openvino.convert_model`` from detrtool's own ONNX export (static shapes, the mask a live input) and
saved with fp32 weights (``weights="fp16"`` compresses them). Run with the OpenVINO CPU plugin.

Metadata: the detrtool metadata JSON is one ``rt_info`` entry (``<rt_info><detrtool value="..."/>``).
Content hash: sha256 over the ``.xml`` text with that entry's value blanked, then the ``.bin`` bytes
(:func:`ir_digest`); it covers both files, and the recorded hash seals it with every metadata field
(:func:`exporters.metadata.seal`). The exporter returns a
:class:`~exporters.artifact_file.MultiFileArtifact` (the ``.bin`` a companion of the ``.xml``), written
atomically as a pair by :func:`exporters.export`.

Loading never runs code from the files: both are read once, the ``.xml`` must be UTF-8 without a DTD or
entities, every weight's ``offset + size`` must end exactly at the ``.bin``'s size, the content hash must
match, and a ``runtime_options`` entry (compile settings carried by the model) is refused; the model is
then parsed from those bytes (``Core.read_model(xml_text, weights_tensor)``: OpenVINO opens no other file
and loads no extension library for an IR; custom operations would need ``Core.add_extension``, which
detrtool never calls). ``precision`` picks ``INFERENCE_PRECISION_HINT`` (``f32`` by default: OpenVINO
would otherwise run bf16 on a CPU that has it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from detr_core.atomic import temp_folder
from exporters.artifact_file import ArtifactError, MultiFileArtifact, check_sealed, first_line, read_artifact
from exporters.backend import Backend
from exporters.format_options import OPENVINO_WEIGHTS as WEIGHTS
from exporters.metadata import ArtifactMetadata, MetadataError, strict_json

PRECISIONS = {"fp32": "f32", "bf16": "bf16", "f32": "f32"}
BIN_SUFFIX = ".bin"
RT_KEY = "detrtool"
_ENTRY = re.compile(r'^(\t*<detrtool value=")([^"]*)(" />)$', re.MULTILINE)
_WEIGHT = re.compile(r'<data\b[^>]*\boffset="(\d+)"[^>]*\bsize="(\d+)"')
_PLACEHOLDER = "{}"


def weights_path(path: Path) -> Path:
    """The ``.bin`` beside an ``.xml``."""
    return Path(path).with_suffix(BIN_SUFFIX)


def ir_digest(xml_text: str, weights: bytes) -> str:
    """sha256 over the ``.xml`` with the detrtool entry's value blanked and the ``.bin`` bytes."""
    digest = hashlib.sha256(_ENTRY.sub(r"\1\3", xml_text).encode("utf-8"))
    digest.update(hashlib.sha256(weights).digest())
    return digest.hexdigest()


def _stamp(xml_text: str, metadata: ArtifactMetadata) -> str:
    """The ``.xml`` with ``metadata`` as the detrtool entry's value (XML-escaped JSON)."""
    value = html.escape(metadata.to_json().replace("\n", " "), quote=True)
    text, count = _ENTRY.subn(lambda m: m.group(1) + value + m.group(3), xml_text)
    if count != 1:
        raise ArtifactError(f"openvino: expected one detrtool rt_info entry in the IR, found {count}")
    return text


def stamped_ir(xml_text: str, weights: bytes, metadata: ArtifactMetadata) -> MultiFileArtifact:
    """The pair with ``metadata`` and its content hash recorded in the ``.xml``."""
    stamped = metadata.sealed(ir_digest(xml_text, weights))
    return MultiFileArtifact(_stamp(xml_text, stamped).encode("utf-8"), {BIN_SUFFIX: weights})


def _bare_onnx(data: bytes) -> bytes:
    """The ONNX model without detrtool's metadata props (OpenVINO would copy them into the IR)."""
    import onnx

    from exporters.metadata import PROP_PREFIX

    model = onnx.load_model_from_string(data)
    kept = [p for p in model.metadata_props if not p.key.startswith(PROP_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return model.SerializeToString()


def save_ir(model, *, compress_to_fp16: bool = False) -> tuple[str, bytes]:
    """``openvino.save_model`` into a private temp folder; (xml text, bin bytes)."""
    import openvino as ov

    with temp_folder("openvino") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
        return xml.read_text(encoding="utf-8"), weights_path(xml).read_bytes()


def export_openvino(wrapper: nn.Module, example_inputs: tuple[Tensor, ...], *, metadata: ArtifactMetadata,
                    weights: str = "fp32") -> MultiFileArtifact:
    """``wrapper`` -> detrtool's ONNX (dynamo, opset 18) -> ``openvino.convert_model`` -> IR pair in memory
    with ``metadata`` and the content hash; ``weights`` fp32 (default) or fp16 (compressed)."""
    import io

    import openvino as ov

    from exporters.onnx import _quiet, export_onnx

    if weights not in WEIGHTS:
        raise ValueError(f"openvino option weights={weights!r}; choose from {', '.join(WEIGHTS)}")
    onnx_meta = dataclasses.replace(metadata, format="onnx")
    data = _bare_onnx(export_onnx(wrapper, example_inputs, metadata=onnx_meta))
    with _quiet():
        model = ov.convert_model(io.BytesIO(data))
    model.set_rt_info(_PLACEHOLDER, [RT_KEY])
    xml_text, blob = save_ir(model, compress_to_fp16=weights == "fp16")
    return stamped_ir(xml_text, blob, metadata)


def _xml_text(data: bytes, path: Path) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: not an OpenVINO IR (the .xml is not UTF-8 text)") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ArtifactError(f"{path}: the .xml declares a DTD or entities; detrtool IRs have none, refusing it")
    if "<net " not in text[:4096]:
        raise ArtifactError(f"{path}: not an OpenVINO IR (no <net> element at the start of the .xml)")
    if not text.rstrip().endswith("</net>"):
        raise ArtifactError(f"{path}: the .xml is truncated (it does not end with </net>)")
    return text


def _metadata(xml_text: str, path: Path) -> ArtifactMetadata:
    found = _ENTRY.findall(xml_text)
    if len(found) != 1:
        raise MetadataError(f"{path}: no detrtool metadata in the IR (was it exported by detrtool?)")
    try:
        return ArtifactMetadata.from_json(html.unescape(found[0][1]))
    except (ValueError, TypeError) as exc:
        raise MetadataError(f"{path}: damaged detrtool metadata ({first_line(exc)})") from None


def read_openvino_metadata(path: Path) -> ArtifactMetadata:
    """From the ``.xml``'s rt_info entry, without reading the model."""
    return _metadata(_xml_text(read_artifact(path), path), path)


def _weights(path: Path, xml_text: str) -> bytes:
    """The ``.bin``'s bytes; :class:`ArtifactError` when missing or not the size the ``.xml`` needs."""
    bin_path = weights_path(path)
    if not bin_path.is_file():
        raise ArtifactError(f"{path}: its weights file {bin_path.name} is missing")
    blob = bin_path.read_bytes() if bin_path.stat().st_size else b""
    needed = max((int(o) + int(s) for o, s in _WEIGHT.findall(xml_text)), default=0)
    if len(blob) != needed:
        raise ArtifactError(f"{path}: weights file {bin_path.name} has {len(blob)} bytes, the IR needs {needed}")
    return blob


def _check_rt_info(xml_text: str, path: Path) -> None:
    if "<runtime_options" in xml_text:
        raise ArtifactError(f"{path}: the IR carries runtime_options (compile settings); detrtool IRs have "
                            "none, refusing it")


def verified_ir(path: Path) -> tuple[str, bytes, ArtifactMetadata]:
    """The ``.xml`` text and ``.bin`` bytes, read once and checked (see module doc), and the metadata."""
    xml_text = _xml_text(read_artifact(path), path)
    blob = _weights(path, xml_text)
    _check_rt_info(xml_text, path)
    metadata = _metadata(xml_text, path)
    fields = strict_json(html.unescape(_ENTRY.findall(xml_text)[0][1]))  # every field, as in the file
    check_sealed(path, fields=fields, content=ir_digest(xml_text, blob))
    return xml_text, blob, metadata


def compile_config(*, precision: str = "fp32", threads: int | None = None) -> dict[str, str]:
    """CPU plugin settings: precision hint, latency mode with one stream, the thread count."""
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision {precision!r}; choose from fp32, bf16")
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": "1"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return config


def cpu_capabilities() -> frozenset[str] | None:
    """What the OpenVINO CPU plugin lists as its ``OPTIMIZATION_CAPABILITIES`` (``BF16``, ``INT8``, ...);
    None where it cannot be asked (no CPU plugin, an old runtime)."""
    import openvino as ov

    try:
        return frozenset(str(c).upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except (RuntimeError, TypeError):
        return None


def cpu_supports(precision: str) -> bool:
    """Whether the OpenVINO CPU plugin lists ``precision`` (``BF16``, ``INT8``) among its capabilities."""
    return precision.upper() in (cpu_capabilities() or ())


def load_openvino(path: Path, *, device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                  **_: object) -> Backend:
    """The checked IR compiled for the CPU plugin; tensors in and out on the CPU (numpy in between)."""
    import openvino as ov

    if torch.device(device).type != "cpu":
        raise ValueError(f"detrtool runs OpenVINO IRs on the CPU only, not {device!r}")
    xml_text, blob, metadata = verified_ir(path)
    core = ov.Core()
    try:
        model = core.read_model(xml_text, ov.Tensor(np.frombuffer(blob, dtype=np.uint8)) if blob else ov.Tensor())
        compiled = core.compile_model(model, "CPU", compile_config(precision=precision, threads=threads))
    except Exception as exc:  # noqa: BLE001 - OpenVINO's RuntimeError/GeneralFailure: one line
        raise ArtifactError(f"{path}: OpenVINO cannot load the IR ({first_line(exc)})") from None
    return Backend(run=_runner(compiled), native=compiled, device="cpu", metadata=metadata)


def _runner(compiled):
    request = compiled.create_infer_request()

    def run(inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        feed = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in inputs]
        results = request.infer(feed, share_inputs=True)
        return [torch.from_numpy(np.array(results[out], copy=True)) for out in compiled.outputs]

    return run
