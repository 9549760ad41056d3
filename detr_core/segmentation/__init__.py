"""Segmentation outputs: mask and panoptic post-processing (``postprocess``) and the COCO panoptic file
format (``panoptic_format``)."""

from __future__ import annotations

from detr_core.lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use: importing a submodule stays light).
_EXPORTS = {
    "PostProcessPanoptic": "detr_core.segmentation.postprocess",
    "PostProcessSegm": "detr_core.segmentation.postprocess",
    "panoptic_predictions": "detr_core.segmentation.postprocess",
    "segm_masks": "detr_core.segmentation.postprocess",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
