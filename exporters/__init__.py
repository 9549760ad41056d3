"""detrtool exporters: DETR to TorchScript, ONNX and torch.export with a static padded input and a live mask.

The public API::

    from exporters import export, load_runtime, prepare_for, read_metadata
    result = export(model, "onnx", "detr.onnx", input_size=(800, 1333), batch_size=1)  # validated
    runtime = load_runtime("detr.onnx")                       # any format, one interface
    images, mask, orig_sizes = prepare_for("detr.onnx", [pil_image])
    out = runtime(images, mask, orig_sizes)                   # {"pred_logits", "pred_boxes"} tensors
"""

from exporters.artifact_file import ArtifactError, IntegrityError
from exporters.export_api import ExportResult, export
from exporters.formats import FORMATS, ExportFormat, format_for_path, get_format, read_metadata
from exporters.metadata import ArtifactMetadata
from exporters.prepare import prepare, prepare_for
from exporters.runtime import InputError, Runtime, load_runtime

__all__ = [
    "FORMATS",
    "ArtifactError",
    "ArtifactMetadata",
    "ExportFormat",
    "ExportResult",
    "InputError",
    "IntegrityError",
    "Runtime",
    "export",
    "format_for_path",
    "get_format",
    "load_runtime",
    "prepare",
    "prepare_for",
    "read_metadata",
]
