"""Helpers of the HF tests: Hugging Face DETR models (detectors and ``DetrForSegmentation``) built offline
from small configs with random weights
(transformers is a test dependency only), a padded batch whose mask reaches the feature map, and output
comparisons.

Random weights are scaled so every part of the model matters: a ResNet initialised the transformers way
gives near-zero features, and a DETR fed those gives the same outputs with or without its mask, which
would let a wrong mapping pass (the parity test also checks that dropping the mask changes the outputs).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never download: backbones are built from local configs

from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from transformers import DetrConfig, DetrForObjectDetection, DetrForSegmentation, ResNetConfig  # noqa: E402

from bench.compare_hf import randomize_weights  # noqa: E402

LABELS = ("cat", "dog", "bird")
_RESNET = {"resnet18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512]),
           "resnet50": ("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048])}


def hf_config(*, backbone: str = "resnet18", timm: bool = True, dilation: bool = False, position: str = "sine",
              layers: int = 2, d_model: int = 64, queries: int = 7, labels: tuple[str, ...] = LABELS,
              heads: int = 4, stages: int = 1) -> DetrConfig:
    """A small ``DetrConfig``: 4 heads (not the default 8, so it must come from config.json), no download; a
    transformers ResNet gives its last ``stages`` maps (a mask head needs 4)."""
    sizes = dict(d_model=d_model, encoder_layers=layers, decoder_layers=layers, encoder_ffn_dim=96,
                 decoder_ffn_dim=96, encoder_attention_heads=heads, decoder_attention_heads=heads, num_queries=queries,
                 id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                 position_embedding_type=position, use_pretrained_backbone=False)
    if timm:
        return DetrConfig(use_timm_backbone=True, backbone=backbone, dilation=dilation, **sizes)
    layer_type, depths, widths = _RESNET[backbone]
    resnet = ResNetConfig(layer_type=layer_type, depths=depths, hidden_sizes=widths, embedding_size=64,
                          out_features=[f"stage{i}" for i in range(5 - stages, 5)])
    return DetrConfig(use_timm_backbone=False, backbone_config=resnet, **sizes)


def hf_detr(config: DetrConfig, *, seed: int = 0) -> DetrForObjectDetection:
    """``DetrForObjectDetection(config)`` in eval mode with weights and frozen-BN statistics drawn at a scale
    that keeps activations O(1) through the whole network."""
    torch.manual_seed(seed)
    return randomize_weights(DetrForObjectDetection(config).eval())


def hf_segmentation(config: DetrConfig, *, seed: int = 0) -> DetrForSegmentation:
    """``DetrForSegmentation(config)`` in eval mode, every weight drawn as :func:`hf_detr` draws them (the mask
    head's too). The mask head needs ``d_model`` a multiple of 128 and ``d_model + heads`` of 8.

    The first convolution's weights on the attention maps are scaled by the maps' size: each map sums to 1
    over heads x h x w, so at the drawn scale they would hardly reach the masks, and a wrong ``bbox_attention``
    mapping (or a mask ignored there) would pass a 1e-4 comparison."""
    torch.manual_seed(seed)
    model = randomize_weights(DetrForSegmentation(config).eval())
    with torch.no_grad():
        model.mask_head.conv1.conv.weight[:, config.d_model:] *= 256
    return model


def segmentation_config(**kwargs) -> DetrConfig:
    """:func:`hf_config` at the smallest size a mask head allows: ``d_model`` 128, 8 heads, one layer each."""
    return hf_config(**{"d_model": 128, "heads": 8, "layers": 1, "queries": 5, "stages": 4, **kwargs})


def padded_batch(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images padded into one canvas: a 128x64 one and a 64x96 one (mask True on padding, pixels 0)."""
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, size, size, dtype=torch.bool)
    mask[0, :, size // 2:] = True
    mask[1, size // 2:, :] = True
    mask[1, :, size * 3 // 4:] = True
    images[mask[:, None].expand_as(images)] = 0
    return images, mask


def hf_outputs(model: DetrForObjectDetection | DetrForSegmentation, images: torch.Tensor,
               mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers' logits and boxes on the batch (``pixel_mask`` is 1 on real pixels: ``~mask``), and a
    ``DetrForSegmentation``'s ``pred_masks`` [B, Q, H/4, W/4] (mask logits over the padded canvas)."""
    with torch.no_grad():
        out = model(pixel_values=images, pixel_mask=(~mask).long())
    masks = {"pred_masks": out.pred_masks} if isinstance(model, DetrForSegmentation) else {}
    return {"pred_logits": out.logits, "pred_boxes": out.pred_boxes, **masks}


def detr_outputs(model: torch.nn.Module, images: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """detrtool's logits and boxes (and a DETRsegm's ``pred_masks``) on the batch."""
    with torch.no_grad():
        out = model(images, mask)
    return {k: out[k] for k in ("pred_logits", "pred_boxes", "pred_masks") if k in out}


def max_delta(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
              keys: tuple[str, ...] = ("pred_logits", "pred_boxes")) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


def save_hf(model: DetrForObjectDetection, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder
