"""Which model ``detrtool predict`` runs: a checkpoint (eager, or exported on the fly to the runtime the
user will ship) or an exported artifact, with the input rule and class names that go with it.

A checkpoint has no canvas: images are resized by the eval rule it was trained for
(:func:`checkpoint_resize_rule`: 800 / 1333, or the shapes preset's size) and padded to the largest of
their batch, or, with ``input_size`` HxW, fitted into that static canvas (the rule, then scaled down to
fit, never cropped). Exported on the fly, the canvas is ``input_size`` or (size, max_size). An artifact carries its canvas, resize rule, batch size and
class names in its metadata (a dynamic one: the resize rule only; each batch is padded to its largest
image, any batch size); an artifact without class names falls back to class ids.

A segmentation model (``masks``) also says which classes are things: its config's ``stuff_classes`` (a
checkpoint's, or the one stored in an artifact's metadata); none given, every class is a thing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from detr_core.atomic import temp_folder
from detr_core.checkpoint import model_from_checkpoint, read_checkpoint
from detr_core.data.sources import DatasetSource
from detr_core.training.train_config import TrainConfig
from exporters.export_api import export
from exporters.formats import get_format
from exporters.predict.run import EagerRuntime, InputSpec, RuntimeFn
from exporters.prepare import dynamic_min_canvas
from exporters.runtime import load_runtime

logger = logging.getLogger(__name__)

DEFAULT_SIZE, DEFAULT_MAX_SIZE = 800, 1333


@dataclass
class PredictModel:
    """A runtime and what goes with it: input rule, class names (may be empty), optional attention;
    ``masks``: a segmentation model, ``is_thing``: class id -> thing (True) or stuff (False)."""

    runtime: RuntimeFn
    spec: InputSpec
    class_names: tuple[str, ...]
    description: str
    attention: EagerRuntime | None = None
    masks: bool = False
    is_thing: dict[int, bool] = field(default_factory=dict)


def checkpoint_resize_rule(path: str | Path | dict[str, Any]) -> tuple[int, int | None]:
    """(size, max_size) of the eval rule a checkpoint (its path, or its dict as :func:`read_checkpoint` gives
    it) was trained for: a detrtool checkpoint trained with the shapes preset evaluates at its ``image_size``
    (longer side <= 5/3 of it, as ``make_shapes_eval_transforms``); anything else (official checkpoints
    included) at 800 / 1333."""
    stored = (path if isinstance(path, dict) else read_checkpoint(path)).get("config")
    run = stored.get("run") if isinstance(stored, dict) else None
    if not isinstance(run, dict):
        return DEFAULT_SIZE, DEFAULT_MAX_SIZE
    try:
        data = DatasetSource(**{k: v for k, v in (stored.get("data") or {}).items() if v is not None})
        preset = TrainConfig(data=data, transforms=str(run.get("transforms", "auto"))).transforms_preset
    except (TypeError, ValueError):
        return DEFAULT_SIZE, DEFAULT_MAX_SIZE
    if preset == "shapes":
        size = int(run.get("image_size", 128))
        return size, size * 5 // 3
    return DEFAULT_SIZE, DEFAULT_MAX_SIZE


def open_checkpoint(path: str | Path, *, fmt: str = "eager", device: str = "cpu",
                    input_size: tuple[int, int] | None = None, nheads: int | None = None,
                    attention: bool = False, batch_size: int = 1) -> PredictModel:
    """Load ``path`` eagerly; for another ``fmt`` export it (static canvas ``input_size``, default
    800x1333, and ``batch_size``) to a temporary file and run that artifact."""
    overrides = {"nheads": nheads} if nheads is not None else {}
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, path, **overrides)
    names = tuple(model.config.class_names)
    size, max_size = checkpoint_resize_rule(ckpt)
    masks, is_thing = hasattr(model, "mask_head"), things_of(model.config.num_classes, model.config.stuff_classes)
    if fmt == "eager":
        eager = EagerRuntime(model, device, capture_attention=attention)
        spec = InputSpec(input_size, size, max_size)
        return PredictModel(eager, spec, names, f"{Path(path).name} (eager, {device})", eager if attention else None,
                            masks, is_thing)
    canvas = input_size or (size, max_size or size)
    opened = open_exported(model, InputSpec(canvas, size, max_size, batch_size), fmt, device)
    opened.class_names = opened.class_names or names
    opened.description = (f"{Path(path).name} exported to {fmt} ({device}, canvas {canvas[0]}x{canvas[1]}, "
                          f"batch {batch_size})")
    opened.attention = EagerRuntime(model, device, capture_attention=True) if attention else None
    opened.masks, opened.is_thing = masks, is_thing
    return opened


def things_of(num_classes: int, stuff_classes: Any = ()) -> dict[int, bool]:
    """Class id -> True for things, False for ``stuff_classes`` (ids 0..num_classes-1; none: all things)."""
    stuff = {int(c) for c in stuff_classes or ()}
    return {c: c not in stuff for c in range(num_classes)}


def open_exported(model: nn.Module, spec: InputSpec, fmt: str, device: str) -> PredictModel:
    """Export ``model`` to ``fmt`` with ``spec``'s canvas, batch and resize rule in a temporary folder (no
    validation: ``detrtool export`` validates) and load it; the file is gone once its runtime holds it."""
    with temp_folder("predict") as folder:
        artifact = Path(folder) / f"model{get_format(fmt).suffix}"
        logger.info("exporting to %s (canvas %s, batch %d)", fmt, spec.canvas, spec.batch)
        export(model.eval().cpu(), fmt, artifact, input_size=spec.canvas, batch_size=spec.batch, size=spec.size,
               max_size=spec.max_size, validate=False)
        return open_artifact(artifact, fmt=fmt, device=device)


def open_artifact(path: str | Path, *, fmt: str | None = None, device: str = "cpu") -> PredictModel:
    """An exported artifact with its metadata (format from the suffix unless ``fmt`` is given)."""
    if fmt == "eager":
        raise ValueError(f"{path}: --format eager needs --resume CKPT, not an exported --model")
    runtime = load_runtime(path, format=fmt, device=device)
    meta = runtime.metadata
    names = tuple(meta.class_names or ())
    if meta.dynamic:
        spec = InputSpec(None, meta.size, meta.max_size, None, tuple(meta.mean), tuple(meta.std),
                         dynamic_min_canvas(meta))
        canvas = "dynamic: each batch padded to its largest image"
    else:
        spec = InputSpec(tuple(meta.input_size), meta.size, meta.max_size, meta.batch_size, tuple(meta.mean),
                         tuple(meta.std))
        canvas = f"canvas {meta.input_size[0]}x{meta.input_size[1]}, batch {meta.batch_size}"
    is_thing = things_of(meta.num_classes, (meta.model_config or {}).get("stuff_classes"))
    return PredictModel(runtime, spec, names, f"{Path(path).name} ({runtime.format}, {device}, {canvas})",
                        masks=bool(getattr(meta, "masks", False)), is_thing=is_thing)
