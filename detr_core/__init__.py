"""detrtool core: the DETR model, matcher, losses, post-processing, data, evaluation and training.

The public API::

    from detr_core import load_checkpoint, get_model, build_model, ModelConfig, pad_images
    model = load_checkpoint("detr-r50-e632da11.pth")          # official or detrtool checkpoint, eval mode
    images, mask = pad_images([img_a, img_b])                # [B,3,H,W], [B,H,W] True on padding
    out = model(images, mask)                                 # pred_logits [B,Q,C+1], pred_boxes [B,Q,4]

The names load on first use (PEP 562), so importing a light submodule (``detr_core.errors``,
``detr_core.atomic``) does not import torch: the CLI answers ``--help`` at once.
"""

from __future__ import annotations

from detr_core.lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {
    "DETR": "detr_core.models.detr",
    "CheckpointError": "detr_core.checkpoint",
    "LossConfig": "detr_core.config",
    "ModelConfig": "detr_core.config",
    "build_model": "detr_core.registry",
    "get_model": "detr_core.registry",
    "infer_config": "detr_core.checkpoint",
    "list_models": "detr_core.registry",
    "load_checkpoint": "detr_core.checkpoint",
    "pad_images": "detr_core.data.batching",
    "register_backbone": "detr_core.registry",
    "save_checkpoint": "detr_core.checkpoint",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
