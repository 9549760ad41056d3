"""Drawing the synthetic shapes: parameters, objects, one rendered image, and the PNG writer.

The leaf both generators build on (:mod:`detr_core.data.shapes` for detection, :mod:`detr_core.data.
shapes_panoptic` for its panoptic variant), so neither imports the other's internals. Each image uses
its own ``numpy`` generator, so the same parameters give the same pixels and objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from PIL import ImageDraw

from detr_core.atomic import atomic_write

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ellipse", "hexagon")
SPLITS: tuple[str, ...] = ("train", "val")
GENERATOR_VERSION = 1
_MIN_VISIBLE = 0.5
_PLACEMENT_TRIES = 8
_PNG_LEVEL = 1


@dataclass(frozen=True)
class ShapesParams:
    """Generator parameters (the cache folder is named by them)."""

    seed: int = 0
    image_size: int = 128
    train_count: int = 4000
    val_count: int = 500
    classes: tuple[str, ...] = SHAPE_CLASSES
    min_objects: int = 1
    max_objects: int = 5
    min_scale: float = 0.12
    max_scale: float = 0.4

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in SHAPE_CLASSES]
        if unknown or not self.classes:
            raise ValueError(f"shapes: unknown or no classes {unknown}; choose from {', '.join(SHAPE_CLASSES)}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"shapes: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.image_size < 16:
            raise ValueError(f"shapes: image_size must be >= 16, got {self.image_size}")

    def count(self, split: str) -> int:
        return self.train_count if split == "train" else self.val_count


@dataclass
class ShapeObject:
    """One drawn object: class index, full polygon (x, y vertices) and its visible mask [H, W] bool."""

    label: int
    polygon: list[tuple[float, float]]
    mask: np.ndarray
    full_area: int


def _regular_polygon(n: int, radius: float, angle: float, aspect: float = 1.0) -> np.ndarray:
    t = angle + np.arange(n) * (2 * np.pi / n)
    pts = np.stack([np.cos(t) * radius, np.sin(t) * radius * aspect], axis=1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T if aspect != 1.0 else pts


def shape_polygon(kind: str, rng: np.random.Generator, radius: float) -> np.ndarray:
    """Vertices [V, 2] of a shape of ``kind`` centred at the origin with circumradius ``radius``."""
    angle = float(rng.uniform(0, 2 * np.pi))
    if kind == "circle":
        return _regular_polygon(40, radius, 0.0)
    if kind == "square":
        return _regular_polygon(4, radius, np.pi / 4 + float(rng.uniform(-0.25, 0.25)))
    if kind == "triangle":
        return _regular_polygon(3, radius, angle)
    if kind == "hexagon":
        return _regular_polygon(6, radius, angle)
    if kind == "ellipse":
        return _regular_polygon(40, radius, angle, aspect=float(rng.uniform(0.4, 0.6)))
    if kind == "star":
        pts = _regular_polygon(10, radius, angle)
        pts[1::2] *= 0.45
        return pts
    raise ValueError(f"unknown shape {kind!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field [H, W, 3] float32 (textured by noise later)."""
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    field = PIL.Image.fromarray(coarse, mode="RGB").resize((size, size), PIL.Image.Resampling.BILINEAR)
    return np.asarray(field, dtype=np.float32)


def _draw_mask(poly: np.ndarray, size: int) -> np.ndarray:
    canvas = PIL.Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in poly.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _occludes_too_much(mask: np.ndarray, objects: list[ShapeObject]) -> bool:
    return any((o.mask & ~mask).sum() < _MIN_VISIBLE * o.full_area for o in objects)


def _place_object(rng: np.random.Generator, p: ShapesParams, label: int, objects: list[ShapeObject]) -> None:
    size = p.image_size
    for _ in range(_PLACEMENT_TRIES):
        radius = float(rng.uniform(p.min_scale, p.max_scale)) * size / 2 * 1.2
        centre = rng.uniform(radius * 0.5, size - radius * 0.5, size=2)
        poly = shape_polygon(p.classes[label], rng, radius) + centre
        mask = _draw_mask(poly, size)
        area = int(mask.sum())
        if area < 9 or _occludes_too_much(mask, objects):
            continue
        for other in objects:
            other.mask &= ~mask
        objects.append(ShapeObject(label, [(float(x), float(y)) for x, y in poly], mask, area))
        return


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random RGB colour at least ~70 levels (L2) away from ``under`` (the mean colour it covers)."""
    colour = rng.integers(0, 256, size=3).astype(np.float32)
    for _ in range(_PLACEMENT_TRIES):
        if np.linalg.norm(colour - under) >= 70:
            break
        colour = rng.integers(0, 256, size=3).astype(np.float32)
    return colour


def render_image(rng: np.random.Generator, p: ShapesParams) -> tuple[np.ndarray, list[ShapeObject]]:
    """One sample: image uint8 [H, W, 3] and its objects (visible masks are exact for the pixels drawn)."""
    return render_objects(rng, p, _background(rng, p.image_size))


def render_objects(rng: np.random.Generator, p: ShapesParams,
                    image: np.ndarray) -> tuple[np.ndarray, list[ShapeObject]]:
    """Place and paint the objects on ``image`` float32 [H, W, 3], add noise; uint8 image and objects."""
    objects: list[ShapeObject] = []
    for _ in range(int(rng.integers(p.min_objects, p.max_objects + 1))):
        _place_object(rng, p, int(rng.integers(len(p.classes))), objects)
    for obj in objects:
        full = _draw_mask(np.asarray(obj.polygon), p.image_size)
        colour = _contrasting_colour(rng, image[full].mean(axis=0))
        image[full] = colour * 0.85 + image[full] * 0.15
    noise = rng.standard_normal(size=image.shape, dtype=np.float32)
    noise *= float(rng.uniform(4, 16))
    return np.clip(image + noise, 0, 255).astype(np.uint8), objects


def mask_to_bbox(mask: np.ndarray) -> list[int]:
    """Tight COCO box ``[x, y, w, h]`` (pixel edges) of a non-empty bool mask [H, W]."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def write_png(path: Path, pixels: np.ndarray) -> None:
    image = PIL.Image.fromarray(pixels, mode="RGB")
    atomic_write(path, lambda handle: image.save(handle, format="PNG", compress_level=_PNG_LEVEL))


def params_dict(p: ShapesParams) -> dict[str, Any]:
    data = dataclasses.asdict(p)
    data["classes"] = list(p.classes)
    return data
