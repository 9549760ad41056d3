"""A small CNN backbone for CPU training, registered as ``small_cnn`` (BatchNorm) and ``small_cnn_gn``.

Four stages of 3x3 convolutions with a normalisation and ReLU, each halving the resolution: 32, 64, 128
and 256 channels, stride 16, about 1.2M parameters. ``small_cnn`` uses BatchNorm (the fastest to train
from scratch; the shapes default). ``small_cnn_gn`` uses GroupNorm, which normalises each image on its
own: a sample's features never depend on the rest of its batch (under DDP one step equals one process
on the combined batch exactly). ``dilation=True`` keeps the last stage at stride 8 with dilated
convolutions (like DC5 for the ResNets).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor, nn

from detr_core.models.backbone import (
    Backbone,
    load_backbone_state,
    read_backbone_state,
    register_backbone,
)

log = logging.getLogger(__name__)

STAGE_CHANNELS = (32, 64, 128, 256)
GROUPS = 8


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(GROUPS, channels)


def _conv(cin: int, cout: int, norm: str, *, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """``forward(images) -> {"0": features}`` (the dict the ``Backbone`` wrapper reads)."""

    def __init__(self, *, dilation: bool = False, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        stages = []
        cin = 3
        for i, cout in enumerate(STAGE_CHANNELS):
            dilate = dilation and i == len(STAGE_CHANNELS) - 1
            layers = _conv(cin, cout, norm, stride=1 if dilate else 2)
            if i > 0:
                layers += _conv(cout, cout, norm, dilation=2 if dilate else 1)
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """-> ``"0"`` the last stage's map and :data:`FPN_KEYS` the three before it, coarse to fine."""
        maps = []
        x = images
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        # FPN_KEYS spelt out: TorchScript reads no global tuple. The mask head's maps are the last three stages
        # (strides 16, 8, 4; masks at H/4 as with the ResNets), not the stride-2 stem (4x the pixels to convolve).
        return {"0": maps[-1], "fpn0": maps[3], "fpn1": maps[2], "fpn2": maps[1]}


def _small_backbone(norm: str, dilation: bool, train_backbone: bool, weights_path: str | Path | None) -> Backbone:
    body = SmallCNN(dilation=dilation, norm=norm)
    if weights_path is not None:
        load_backbone_state(body, read_backbone_state(weights_path), path=weights_path)
        log.info("loaded small CNN weights from %s", weights_path)
    body.requires_grad_(train_backbone)
    return Backbone(body=body, num_channels=STAGE_CHANNELS[-1], stride=8 if dilation else 16,
                    fpn_channels=(STAGE_CHANNELS[3], STAGE_CHANNELS[2], STAGE_CHANNELS[1]),
                    fpn_strides=(8 if dilation else 16, 8, 4))


@register_backbone("small_cnn")
def small_cnn_backbone(*, dilation: bool = False, train_backbone: bool = True,
                       weights_path: str | Path | None = None) -> Backbone:
    """The small CNN with BatchNorm (``weights_path``: a state dict of ``SmallCNN``)."""
    return _small_backbone("batch", dilation, train_backbone, weights_path)


@register_backbone("small_cnn_gn")
def small_cnn_gn_backbone(*, dilation: bool = False, train_backbone: bool = True,
                          weights_path: str | Path | None = None) -> Backbone:
    """The small CNN with GroupNorm (batch-independent features)."""
    return _small_backbone("group", dilation, train_backbone, weights_path)
