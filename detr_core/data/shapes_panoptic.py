"""Synthetic shapes, panoptic variant: things = the shapes, stuff = textured background regions.

Layout written under ``DIR`` (COCO's, as the reference DETR reads it: ``--coco_path DIR --coco_panoptic_path DIR``):
``{train,val}2017/`` images, ``panoptic_{train,val}2017/`` panoptic PNGs (``{image_id:012d}.png``, segment id =
R + 256 G + 256² B, 0 = void; no pixel is void here), ``annotations/panoptic_{train,val}2017.json`` and
``annotations/instances_{train,val}2017.json`` (things only, ``segmentation`` = compressed RLE of the visible
mask, so mask AP can be computed with pycocotools).

Categories: things keep the shapes' ids ``0..K-1`` (``classes`` order); stuff ids follow, ``K..K+S-1`` in
:data:`STUFF_CLASSES` order (``sky``, ``ground``, ``wall``: ids 6, 7, 8 with the six default shapes, so
``num_classes = 9``). The panoptic JSON's ``categories[].isthing`` says which are things
(:func:`panoptic_categories`, :func:`is_thing_map`).

Stuff: each image's background is split into 2 or 3 regions by wavy, roughly horizontal boundaries; each
region is one stuff class (distinct per image, in random order) painted with its own texture (sky: a smooth
vertical gradient, ground: blocky speckle, wall: bricks) in a random colour. A stuff segment is its region
minus the things' visible pixels (left out when nothing of it is visible); a thing segment is exactly its
object's visible pixels. Segment ids are ``k * 0x010101`` (grey levels) for the image's k-th segment.
Deterministic from the seed like the detection shapes; every file goes through :mod:`detr_core.atomic`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detr_core.atomic import atomic_write
from detr_core.data.coco_masks import encode_mask
from detr_core.data.shapes_render import (
    GENERATOR_VERSION,
    SPLITS,
    ShapeObject,
    ShapesParams,
    mask_to_bbox,
    params_dict,
    render_objects,
    write_png,
)
from detr_core.segmentation.panoptic_format import id_to_rgb

STUFF_CLASSES: tuple[str, ...] = ("sky", "ground", "wall")
_MAX_SEGMENTS = 255
#: The most objects per image the panoptic ids allow (``k * 0x010101`` for k <= 255 segments, stuff included).
MAX_OBJECTS = _MAX_SEGMENTS - len(STUFF_CLASSES)
_SEGMENT_STEP = 0x010101


def panoptic_categories(p: ShapesParams) -> list[dict[str, Any]]:
    """COCO panoptic ``categories``: the shapes (ids ``0..K-1``, isthing 1) then :data:`STUFF_CLASSES` (isthing 0)."""
    things = [{"id": i, "name": n, "supercategory": "shape", "isthing": 1} for i, n in enumerate(p.classes)]
    stuff = [{"id": len(p.classes) + i, "name": n, "supercategory": "stuff", "isthing": 0}
             for i, n in enumerate(STUFF_CLASSES)]
    return things + stuff


def is_thing_map(p: ShapesParams) -> dict[int, bool]:
    """``{category_id: is a thing}`` of the panoptic shapes for ``p``."""
    return {c["id"]: bool(c["isthing"]) for c in panoptic_categories(p)}


def _wavy_boundaries(rng: np.random.Generator, size: int, regions: int) -> np.ndarray:
    """Region index int [H, W]: 0 above the first wavy boundary, ``regions - 1`` below the last."""
    x = np.arange(size, dtype=np.float32)
    y = np.arange(size, dtype=np.float32)[:, None]
    index = np.zeros((size, size), dtype=np.int64)
    for j in range(1, regions):
        base = size * (j / regions + float(rng.uniform(-0.06, 0.06)))
        amplitude = size * float(rng.uniform(0.0, 0.07))
        freq, phase = float(rng.uniform(0.5, 2.0)) * 2 * np.pi / size, float(rng.uniform(0, 2 * np.pi))
        index += y >= base + amplitude * np.sin(freq * x + phase)
    return index


def _texture(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A [H, W, 3] float32 field of stuff class ``kind`` (0 gradient, 1 speckle, 2 bricks) in random colours."""
    colour = rng.uniform(30, 225, size=3).astype(np.float32)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)[:, None, None]
    if kind % 3 == 0:
        return np.broadcast_to(colour + 40 * ramp, (size, size, 3)).copy()
    if kind % 3 == 1:
        cell = max(2, size // 32)
        blocks = rng.uniform(-35, 35, size=(size // cell + 1, size // cell + 1, 1)).astype(np.float32)
        return colour + np.kron(blocks, np.ones((cell, cell, 1), dtype=np.float32))[:size, :size]
    row_h = max(4, size // 12)
    ys, xs = np.mgrid[0:size, 0:size]
    shift = (ys // row_h) % 2 * row_h
    mortar = (ys % row_h == 0) | ((xs + shift) % (2 * row_h) == 0)
    return np.where(mortar[..., None], colour * 0.45, colour).astype(np.float32)


def _stuff_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Background float32 [H, W, 3] and its stuff class index int [H, W] (into :data:`STUFF_CLASSES`)."""
    regions = int(rng.integers(2, min(3, len(STUFF_CLASSES)) + 1))
    kinds = rng.permutation(len(STUFF_CLASSES))[:regions]
    region = kinds[_wavy_boundaries(rng, size, regions)]
    image = np.zeros((size, size, 3), dtype=np.float32)
    for kind in kinds.tolist():
        inside = region == kind
        image[inside] = _texture(kind, rng, size)[inside]
    return image, region


def render_panoptic_image(rng: np.random.Generator,
                          p: ShapesParams) -> tuple[np.ndarray, list[ShapeObject], np.ndarray]:
    """Image uint8 [H, W, 3], its objects (visible masks exact) and stuff class index int [H, W]."""
    background, stuff = _stuff_background(rng, p.image_size)
    pixels, objects = render_objects(rng, p, background)
    return pixels, objects, stuff


def panoptic_segments(objects: list[ShapeObject], stuff: np.ndarray,
                      p: ShapesParams) -> list[tuple[int, np.ndarray]]:
    """``(category_id, bool mask [H, W])`` per segment: visible things, then each stuff region minus them."""
    segments = [(obj.label, obj.mask) for obj in objects if obj.mask.any()]
    things = np.zeros(stuff.shape, dtype=bool)
    for _, mask in segments:
        things |= mask
    for kind in sorted(set(np.unique(stuff).tolist())):
        visible = (stuff == kind) & ~things
        if visible.any():
            segments.append((len(p.classes) + kind, visible))
    return segments


def _segment_entries(segments: list[tuple[int, np.ndarray]], size: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Segment id map int64 [H, W] and ``segments_info`` entries (id ``k * 0x010101``)."""
    ids = np.zeros((size, size), dtype=np.int64)
    info = []
    for k, (category, mask) in enumerate(segments, start=1):
        ids[mask] = k * _SEGMENT_STEP
        info.append({"id": k * _SEGMENT_STEP, "category_id": category, "iscrowd": 0,
                     "bbox": mask_to_bbox(mask), "area": int(mask.sum())})
    return ids, info


def _instance_entries(segments: list[tuple[int, np.ndarray]], p: ShapesParams, image_id: int,
                      first_id: int) -> list[dict[str, Any]]:
    """COCO instances annotations of the thing segments (compressed-RLE ``segmentation``)."""
    things = [(c, m) for c, m in segments if c < len(p.classes)]
    return [{"id": first_id + i, "image_id": image_id, "category_id": c, "bbox": mask_to_bbox(m),
             "area": int(m.sum()), "iscrowd": 0, "segmentation": encode_mask(m)} for i, (c, m) in enumerate(things)]


def _write_json(path: Path, p: ShapesParams, **content: Any) -> None:
    data = {"info": {"description": "detrtool synthetic shapes (panoptic)", "version": str(GENERATOR_VERSION),
                     "params": params_dict(p), "stuff_classes": list(STUFF_CLASSES)},
            "licenses": [], **content}
    atomic_write(path, lambda handle: handle.write(json.dumps(data, separators=(",", ":"))), binary=False)


def write_panoptic_split(out: Path, p: ShapesParams, split: str, *, progress: bool) -> int:
    """Write ``split``'s images, panoptic PNGs and both JSON files under ``out``; returns the image count."""
    if p.max_objects > MAX_OBJECTS:
        raise ValueError(f"shapes --panoptic: max_objects must be <= {MAX_OBJECTS}")
    image_dir, png_dir = out / f"{split}2017", out / f"panoptic_{split}2017"
    for folder in (image_dir, png_dir):
        folder.mkdir(parents=True, exist_ok=True)
    images, pan_anns, inst_anns = [], [], []
    for index in tqdm(range(p.count(split)), desc=f"shapes panoptic {split}", disable=not progress, leave=False):
        pixels, objects, stuff = render_panoptic_image(np.random.default_rng((p.seed, SPLITS.index(split), index)), p)
        image_id, name = index + 1, f"{index + 1:012d}.png"
        segments = panoptic_segments(objects, stuff, p)
        ids, info = _segment_entries(segments, p.image_size)
        write_png(image_dir / name, pixels)
        write_png(png_dir / name, id_to_rgb(ids))
        images.append({"id": image_id, "file_name": name, "height": p.image_size, "width": p.image_size})
        pan_anns.append({"image_id": image_id, "file_name": name, "segments_info": info})
        inst_anns.extend(_instance_entries(segments, p, image_id, len(inst_anns) + 1))
    categories = panoptic_categories(p)
    _write_json(out / "annotations" / f"panoptic_{split}2017.json", p, images=images, annotations=pan_anns,
                categories=categories)
    _write_json(out / "annotations" / f"instances_{split}2017.json", p, images=images, annotations=inst_anns,
                categories=[{k: v for k, v in c.items() if k != "isthing"} for c in categories if c["isthing"]])
    return len(images)
