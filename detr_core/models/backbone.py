"""Convolutional backbones with frozen BatchNorm.

The ResNets are torchvision's own (``weights=None``: nothing is downloaded), with
``torchvision.ops.FrozenBatchNorm2d`` (eps 1e-5 inside the rsqrt) and, for DC5, a dilated last stage.
Only ``layer2``–``layer4`` train. Parameter names match the official checkpoints under
``backbone.0.body.``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from detr_core.checkpoint_state import dtype_mismatch

log = logging.getLogger(__name__)

_RESNETS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}
TRAINABLE_STAGES = ("layer2", "layer3", "layer4")


#: The keys under which a body returns its intermediate feature maps, coarse to fine (the panoptic mask
#: head's FPN inputs; for the ResNets layer3, layer2, layer1).
FPN_KEYS = ("fpn0", "fpn1", "fpn2")


class Backbone(nn.Module):
    """A feature extractor: ``images`` [B, 3, H, W] -> ``features`` [B, num_channels, H/s, W/s].

    ``body`` holds the layers (state-dict prefix ``body.``) and returns a dict: ``"0"`` the last feature
    map, and :data:`FPN_KEYS` three intermediate maps, coarse to fine, of ``fpn_channels`` channels at
    ``fpn_strides`` (ResNets: layer3, layer2, layer1 at strides 16, 8, 4). ``num_channels`` and ``stride``
    describe the last map.
    """

    def __init__(self, *, body: nn.Module, num_channels: int, stride: int, fpn_channels: tuple[int, int, int],
                 fpn_strides: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = body
        self.num_channels = num_channels
        self.stride = stride
        self.fpn_channels = tuple(fpn_channels)
        self.fpn_strides = tuple(fpn_strides)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)["0"]

    def forward_fpn(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """-> the last map and the three intermediate maps, coarse to fine."""
        out = self.body(images)
        return out["0"], [out["fpn0"], out["fpn1"], out["fpn2"]]  # FPN_KEYS (TorchScript reads no global tuple)


def resnet_backbone(
    name: str, *, dilation: bool = False, train_backbone: bool = True, weights_path: str | Path | None = None
) -> Backbone:
    """A torchvision ResNet trunk (no avgpool / fc) with FrozenBatchNorm2d.

    ``weights_path`` optionally names a local ImageNet state dict (torchvision's layout, fc keys ignored).
    """
    if name not in _RESNETS:
        raise ValueError(f"unknown ResNet backbone {name!r}; choose one of {sorted(_RESNETS)}")
    resnet = _RESNETS[name](
        weights=None, replace_stride_with_dilation=[False, False, dilation], norm_layer=FrozenBatchNorm2d
    )
    if weights_path is not None:
        _load_imagenet_weights(resnet, Path(weights_path))
    for param_name, param in resnet.named_parameters():
        trainable = train_backbone and param_name.split(".")[0] in TRAINABLE_STAGES
        param.requires_grad_(trainable)
    basic = name in ("resnet18", "resnet34")
    num_channels = 512 if basic else 2048
    fpn_channels = (256, 128, 64) if basic else (1024, 512, 256)
    layers = {"layer4": "0", "layer3": FPN_KEYS[0], "layer2": FPN_KEYS[1], "layer1": FPN_KEYS[2]}
    body = IntermediateLayerGetter(resnet, return_layers=layers)
    return Backbone(body=body, num_channels=num_channels, stride=16 if dilation else 32,
                    fpn_channels=fpn_channels, fpn_strides=(16, 8, 4))


def _load_imagenet_weights(resnet: nn.Module, path: Path) -> None:
    load_backbone_state(resnet, read_backbone_state(path), path=path, ignore=("fc.",))
    log.info("loaded ImageNet backbone weights from %s", path)


class BackboneWeightsError(ValueError):
    """A ``--backbone-weights`` file that is unreadable or does not fit; one line naming the file."""


def read_backbone_state(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path`` (or its ``state_dict`` entry), read weights-only: a file holding any other
    pickled object is refused and nothing in it runs."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise BackboneWeightsError(f"{path}: not a readable backbone state dict ({_why_unreadable(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise BackboneWeightsError(f"{path}: not a backbone state dict (expected a dict of tensors, got "
                                   f"{type(state).__name__})")
    return state


def _why_unreadable(exc: Exception) -> str:
    """A short reason: a refused global (a code payload, never run), a byte that is not a pickle, or torch's
    first sentence."""
    text = " ".join(str(exc).split())
    refused = re.search(r"unsupported GLOBAL (\S+)", text)
    if refused:
        return f"it pickles {refused.group(1)}, which weights-only loading refuses without running it"
    if "Unsupported operand" in text or "invalid load key" in text:
        return "not a PyTorch file: its bytes are not a pickle"
    return f"{type(exc).__name__}: {text.split('. ')[0][:200]}"


def load_backbone_state(module: nn.Module, state: dict[str, Tensor], *, path: str | Path,
                        ignore: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module``: every key must fit (name and shape) but those starting with ``ignore``;
    BatchNorm's ``num_batches_tracked`` may be absent or extra. Else one :class:`BackboneWeightsError`."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    optional = "num_batches_tracked"
    missing = [k for k in own if k not in state and not k.startswith(ignore) and not k.endswith(optional)]
    unexpected = [k for k in state if k not in own and not k.endswith(optional)]
    mismatched = [f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in state.items()
                  if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise BackboneWeightsError(f"{path}: backbone weights do not fit: missing {missing[:3]}, unexpected "
                                   f"{unexpected[:3]}, shape mismatch {mismatched[:3]}")
    problem = dtype_mismatch(own, state)
    if problem:
        raise BackboneWeightsError(f"{path}: {problem}")
    module.load_state_dict(state, strict=False)


BackboneFactory = Callable[..., Backbone]
#: Backbone name -> factory ``f(*, dilation, train_backbone, weights_path) -> Backbone``.
BACKBONES: dict[str, BackboneFactory] = {
    name: (lambda name=name, **kw: resnet_backbone(name, **kw)) for name in _RESNETS
}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make a backbone factory ``f(*, dilation, train_backbone, weights_path) -> Backbone``
    available as ``ModelConfig.backbone = name``."""

    def wrap(factory: BackboneFactory) -> BackboneFactory:
        BACKBONES[name] = factory
        return factory

    return wrap
