"""detrtool exporters: DETR to TorchScript, ONNX and torch.export with a static padded input and a live mask.

The public API::

    from exporters import export, load_runtime, prepare_for, read_metadata
    result = export(model, "onnx", "detr.onnx", input_size=(800, 1333), batch_size=1)  # validated
    runtime = load_runtime("detr.onnx")                       # any format, one interface
    images, mask, orig_sizes = prepare_for("detr.onnx", [pil_image])
    out = runtime(images, mask, orig_sizes)                   # {"pred_logits", "pred_boxes"} tensors
"""

from __future__ import annotations

from detr_core.lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use: importing a submodule stays light).
#: (``prepare`` is not exported: ``exporters.prepare`` is its module, and a package attribute cannot be both.)
_EXPORTS = {
    "ArtifactError": "exporters.artifact_file",
    "IntegrityError": "exporters.artifact_file",
    "ExportResult": "exporters.export_api",
    "export": "exporters.export_api",
    "FORMATS": "exporters.formats",
    "ExportFormat": "exporters.formats",
    "format_for_path": "exporters.formats",
    "get_format": "exporters.formats",
    "read_metadata": "exporters.formats",
    "ArtifactMetadata": "exporters.metadata",
    "prepare_for": "exporters.prepare",
    "InputError": "exporters.runtime",
    "Runtime": "exporters.runtime",
    "load_runtime": "exporters.runtime",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
