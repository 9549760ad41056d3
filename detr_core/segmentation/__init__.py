"""Segmentation outputs: mask and panoptic post-processing (``postprocess``) and the COCO panoptic file
format (``panoptic_format``)."""

from detr_core.segmentation.postprocess import (
    PostProcessPanoptic,
    PostProcessSegm,
    panoptic_predictions,
    segm_masks,
)

__all__ = ["PostProcessPanoptic", "PostProcessSegm", "panoptic_predictions", "segm_masks"]
