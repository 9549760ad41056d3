"""Synthetic shapes: a real, self-made COCO-layout detection dataset (the default when none is given).

Layout written under ``DIR``: ``train2017/``, ``val2017/`` (PNG images, ``{image_id:012d}.png``) and
``annotations/instances_{train,val}2017.json``.

Conventions:

- category ids are ``0..K-1`` in the order of ``classes`` (like VOC converted with offset 0), so DETR's
  ``num_classes = max id + 1 = K``; image and annotation ids start at 1 (pycocotools treats id 0 as "none").
- ``bbox`` is the tight box of the object's *visible* pixels (occluders drawn later are subtracted),
  COCO ``[x, y, w, h]`` with pixel edges (a one-pixel object at column 3 has x=3, w=1); ``area`` is the
  visible pixel count; ``segmentation`` is the shape's full (amodal) polygon. Objects are placed so that
  at least half of each one stays visible.
- deterministic: each image uses its own ``numpy`` generator seeded by ``(seed, split, index)`` and PNGs
  are written with fixed parameters and no metadata, so the same parameters give byte-identical files.
- every file is written atomically (``detr_core.atomic.atomic_write``): a full disk or a kill leaves the
  previous file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detr_core.atomic import atomic_folder, atomic_write, make_folder, staging_folder
from detr_core.data.shapes_render import (  # noqa: F401 - ShapeObject, SHAPE_CLASSES, mask_to_bbox: re-exported
    GENERATOR_VERSION,
    SHAPE_CLASSES,
    SPLITS,
    ShapeObject,
    ShapesParams,
    mask_to_bbox,
    params_dict,
    render_image,
    write_png,
)

logger = logging.getLogger(__name__)

_DONE_MARKER = ".complete"


def _annotations(objects: list[ShapeObject], image_id: int, first_ann_id: int) -> list[dict[str, Any]]:
    anns = []
    for obj in objects:
        if not obj.mask.any():
            continue
        anns.append({
            "id": first_ann_id + len(anns),
            "image_id": image_id,
            "category_id": obj.label,
            "bbox": mask_to_bbox(obj.mask),
            "area": int(obj.mask.sum()),
            "iscrowd": 0,
            "segmentation": [[round(v, 2) for xy in obj.polygon for v in xy]],
        })
    return anns


def _write_split(out: Path, p: ShapesParams, split: str, *, progress: bool) -> int:
    split_index = SPLITS.index(split)
    image_dir = out / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for index in tqdm(range(p.count(split)), desc=f"shapes {split}", disable=not progress, leave=False):
        rng = np.random.default_rng((p.seed, split_index, index))
        pixels, objects = render_image(rng, p)
        image_id = index + 1
        name = f"{image_id:012d}.png"
        write_png(image_dir / name, pixels)
        images.append({"id": image_id, "file_name": name, "height": p.image_size, "width": p.image_size})
        anns.extend(_annotations(objects, image_id, len(anns) + 1))
    _write_json(out / "annotations" / f"instances_{split}2017.json", p, images, anns)
    return len(images)


def _write_json(path: Path, p: ShapesParams, images: list, anns: list) -> None:
    data = {
        "info": {"description": "detrtool synthetic shapes", "version": str(GENERATOR_VERSION),
                 "params": params_dict(p)},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "shape"} for i, n in enumerate(p.classes)],
    }
    atomic_write(path, lambda handle: handle.write(json.dumps(data, separators=(",", ":"))), binary=False)


def generate_shapes(out: str | Path, params: ShapesParams | None = None, *, progress: bool = True,
                    panoptic: bool = False) -> Path:
    """Write the shapes dataset for ``params`` into ``out`` (COCO layout); returns ``out``.

    ``panoptic=True`` writes the panoptic variant instead (:mod:`detr_core.data.shapes_panoptic`: stuff
    backgrounds, panoptic PNGs + JSON, instances JSON with masks).

    Generated into a staging folder and swapped in at the end (:func:`detr_core.atomic.atomic_folder`):
    ``train2017/``, ``val2017/`` and ``annotations/`` of an earlier dataset in ``out`` are kept until the new
    ones are complete, then replaced whole; a failure (disk full, Ctrl-C) leaves them byte for byte."""
    params = params or ShapesParams()
    out = Path(out)
    from detr_core.data.shapes_panoptic import write_panoptic_split

    write = write_panoptic_split if panoptic else _write_split
    with atomic_folder(out) as stage:
        for split in SPLITS:
            n = write(stage, params, split, progress=progress)
            logger.info("shapes: wrote %d %s images to %s", n, split, out / f"{split}2017")
    return out


def cache_dir() -> Path:
    """``$DETRTOOL_CACHE`` if set, else ``~/.cache/detrtool``."""
    env = os.environ.get("DETRTOOL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "detrtool"


def default_shapes_root(params: ShapesParams | None = None, *, panoptic: bool = False) -> Path:
    """Cache folder of the shapes dataset for ``params``, named by them (readable prefix + digest);
    ``panoptic`` names the panoptic variant's folder (``shapes-panoptic-...``)."""
    params = params or ShapesParams()
    extra = {"panoptic": True} if panoptic else {}
    blob = json.dumps({"v": GENERATOR_VERSION, **params_dict(params), **extra}, sort_keys=True).encode()
    digest = hashlib.sha1(blob).hexdigest()[:10]
    name = (f"shapes-{'panoptic-' if panoptic else ''}v{GENERATOR_VERSION}-{params.image_size}px-{params.train_count}tr-{params.val_count}va"
            f"-seed{params.seed}-{digest}")
    return cache_dir() / name


def ensure_default_shapes(*, progress: bool = True, panoptic: bool = False, **params: Any) -> Path:
    """Generate the cached shapes dataset once (into a temp dir, then an atomic rename) and reuse it;
    ``panoptic=True``: the panoptic variant (its own cache folder, :func:`default_shapes_root`)."""
    p = ShapesParams(**{k: tuple(v) if k == "classes" else v for k, v in params.items()})
    root = default_shapes_root(p, panoptic=panoptic)
    if (root / _DONE_MARKER).exists():
        return root
    if root.exists():
        from detr_core.data.coco import DatasetError

        raise DatasetError(f"{root}: a folder without the shapes cache's completion marker ({_DONE_MARKER}); detrtool "
                           "did not make it whole and will not remove it: move it away (or set DETRTOOL_CACHE)")
    make_folder(root.parent)
    tmp = staging_folder(root)  # marked: a killed run's folder is swept by the next call
    try:
        generate_shapes(tmp, p, progress=progress, panoptic=panoptic)
        atomic_write(tmp / _DONE_MARKER, lambda handle: json.dump(params_dict(p), handle), binary=False)
        os.rename(tmp, root)
        logger.info("shapes: cached dataset at %s", root)
    except OSError:
        if not (root / _DONE_MARKER).exists():  # another process made it meanwhile: use theirs
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
