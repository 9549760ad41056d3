"""Transform presets by name.

- ``detr``: the reference's multi-scale training (shorter side 480–800, random crops) and 800-pixel
  evaluation;
- ``shapes``: small images: shorter side ``image_size`` (longer at most 5/3 of it) plus a horizontal flip
  for training. Cheap on CPU (no multi-scale padding), used by the shapes default.
"""

from __future__ import annotations

from typing import Any

from torchvision.transforms import v2

from detr_core.data.transforms import make_eval_transforms, make_shapes_eval_transforms, make_train_transforms

PRESETS = ("detr", "shapes")


def shapes_train_transforms(image_size: int = 128) -> v2.Compose:
    """A horizontal flip, then exactly the shapes eval pipeline (no multi-scale)."""
    return v2.Compose([v2.RandomHorizontalFlip(), *make_shapes_eval_transforms(image_size).transforms])


def transforms_for(preset: str, image_size: int = 128, *, vertical_flip: bool = False) -> tuple[Any, Any]:
    """(train transforms, eval transforms) of ``preset``; ``vertical_flip`` starts the train pipeline with a
    random vertical flip (for data with no up and down, like the synthetic shapes)."""
    if preset == "detr":
        train, evaluate = make_train_transforms(), make_eval_transforms()
    elif preset == "shapes":
        train, evaluate = shapes_train_transforms(image_size), make_shapes_eval_transforms(image_size)
    else:
        raise ValueError(f"unknown transforms preset {preset!r}; choose one of {PRESETS}")
    if vertical_flip:
        train = v2.Compose([v2.RandomVerticalFlip(), *train.transforms])
    return train, evaluate


def eval_transforms(preset: str, image_size: int = 128, eval_size: int | None = None) -> Any:
    """The eval transforms of ``preset``; ``eval_size`` overrides the shorter side (longer ≤ 5/3 of it)."""
    if eval_size is not None:
        return make_eval_transforms(size=eval_size, max_size=eval_size * 5 // 3)
    return transforms_for(preset, image_size)[1]
