"""Backbone pre-training by classifying ground-truth object crops (for backbones trained from scratch).

DETR's recipe starts from an ImageNet-pretrained backbone. With no such weights (the small CPU backbone,
no downloads), a short pre-training gives the backbone what ImageNet would: features that tell the classes
apart. Each training image's objects are cut out as fixed-size windows at their native scale, centred on the
box (``torchvision.ops.roi_align``, bilinear; zeros outside the batch tensor, except one pixel beyond
its edge, which repeats the edge pixel: roi_align's border rule), and the backbone plus a linear head on its
average-pooled features learn to classify them. Measured on the shapes default (README): 3 passes take
about a minute on 2 cores and lift the AP after 10 training minutes from 0.25 (from scratch) to 0.46.

Only the backbone keeps what it learned; the head is thrown away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from detr_core.models.backbone import Backbone
from detr_core.training.engine import conv_layout, progress_bar, to_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropPretrainStats:
    """What the pre-training did: passes over the data, crops seen, seconds, accuracy of its last pass."""

    epochs: int
    crops: int
    seconds: float
    accuracy: float


def object_crops(images: Tensor, targets: list[dict], crop_size: int) -> tuple[Tensor, Tensor]:
    """Windows of ``crop_size`` pixels centred on every box -> (crops [N, 3, S, S], labels [N]).

    ``images`` [B, 3, H, W] (padded batch); ``targets[i]["boxes"]`` [n_i, 4] normalised cx, cy, w, h of
    the image's own ``size`` (h, w); ``targets[i]["labels"]`` [n_i]. Pixel ``k`` has its centre at ``k + 0.5``,
    so a window from integer ``x0`` copies columns ``x0 .. x0 + S - 1`` exactly.
    """
    windows = []
    for target in targets:
        h, w = (float(v) for v in target["size"])
        centres = target["boxes"][:, :2] * target["boxes"].new_tensor([w, h])
        half = crop_size / 2
        windows.append(torch.cat([centres - half, centres + half], dim=1).to(images.dtype))
    labels = torch.cat([t["labels"] for t in targets]) if targets else images.new_zeros(0, dtype=torch.long)
    crops = roi_align(images, windows, output_size=crop_size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return crops, labels


class CropClassifier(nn.Module):
    """``backbone`` features, average-pooled, then one linear layer: [N, 3, S, S] -> logits [N, num_classes]."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_channels, num_classes)

    def forward(self, crops: Tensor) -> Tensor:
        return self.head(self.backbone(crops).mean(dim=(2, 3)))


def pretrain_backbone(backbone: Backbone, loader: Iterable, *, num_classes: int, epochs: int, device: torch.device,
                      crop_size: int = 64, lr: float = 5e-4, weight_decay: float = 1e-4,
                      progress: bool = True, skip_classes: Iterable[int] = ()) -> CropPretrainStats:
    """Train ``backbone`` in place for ``epochs`` passes of ``loader`` (batches of images, mask, targets);
    ``skip_classes`` (a panoptic model's stuff) give no crops: regions, not objects to centre a window on."""
    skip = torch.tensor(sorted(set(skip_classes)), dtype=torch.long, device=device)
    classifier = CropClassifier(backbone, num_classes).to(device).train()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    start, crops_seen, correct, seen = time.perf_counter(), 0, 0, 0
    for epoch in range(epochs):
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        correct = seen = 0
        bar = progress_bar(loader, desc=f"backbone pre-training {epoch}", progress=progress)
        for batch in bar:
            images, _mask, targets = to_device(batch, device)
            crops, labels = object_crops(images, targets, crop_size)
            if skip.numel():
                keep = ~torch.isin(labels, skip)
                crops, labels = crops[keep], labels[keep]
            if labels.numel() == 0:
                continue
            logits = classifier(conv_layout(crops))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += int((logits.detach().argmax(1) == labels).sum())
            seen += labels.numel()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", acc=f"{correct / seen:.3f}")
        crops_seen += seen
    stats = CropPretrainStats(epochs, crops_seen, time.perf_counter() - start, correct / max(1, seen))
    log.info("backbone pre-training: %d epochs, %d object crops, %.1f s, accuracy of the last epoch %.3f",
             stats.epochs, stats.crops, stats.seconds, stats.accuracy)
    return stats
