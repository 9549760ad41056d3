"""detrtool core: the DETR model, matcher, losses, post-processing, data, evaluation and training.

The public API::

    from detr_core import load_checkpoint, get_model, build_model, ModelConfig, pad_images
    model = load_checkpoint("detr-r50-e632da11.pth")          # official or detrtool checkpoint, eval mode
    images, mask = pad_images([img_a, img_b])                # [B,3,H,W], [B,H,W] True on padding
    out = model(images, mask)                                 # pred_logits [B,Q,C+1], pred_boxes [B,Q,4]
"""

from detr_core.checkpoint import CheckpointError, infer_config, load_checkpoint, save_checkpoint
from detr_core.config import LossConfig, ModelConfig
from detr_core.data.batching import pad_images
from detr_core.models.detr import DETR
from detr_core.registry import build_model, get_model, list_models, register_backbone

__all__ = [
    "DETR",
    "CheckpointError",
    "LossConfig",
    "ModelConfig",
    "build_model",
    "get_model",
    "infer_config",
    "list_models",
    "load_checkpoint",
    "pad_images",
    "register_backbone",
    "save_checkpoint",
]
