"""The COCO panoptic file format: segment id maps as RGB PNGs (``id = R + 256 G + 256² B``) and the
``segments_info`` JSON. PNGs are read and written with PIL (no pickle, no code in the file); every file is
written through :mod:`detr_core.atomic`.

Contracts
---------
* ``segment_ids``: [H, W] int64 (torch tensor or numpy array), one segment id per pixel (0 < 256³).
* ``segments_info``: ``[{"id", "isthing", "category_id", "area"}]`` (+ ``"bbox"`` [x, y, w, h] in files).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from detr_core.atomic import atomic_write_bytes, atomic_write_text
from detr_core.input_files import check_regular

IdMap = Union[np.ndarray, torch.Tensor]
_MAX_ID = 256**3


def id_to_rgb(segment_ids: IdMap) -> np.ndarray:
    """[H, W] integer ids -> [H, W, 3] uint8 (R = id % 256, G = id // 256 % 256, B = id // 256²)."""
    ids = _as_int64(segment_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= _MAX_ID):
        raise ValueError(f"segment ids must lie in [0, 256^3), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] int64 ids."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"a panoptic RGB image must be [H, W, 3], got {list(rgb.shape)}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def encode_png(segment_ids: IdMap) -> bytes:
    """The panoptic PNG bytes of ``segment_ids`` [H, W]."""
    with io.BytesIO() as out:
        Image.fromarray(id_to_rgb(segment_ids), mode="RGB").save(out, format="PNG")
        return out.getvalue()


def decode_png(source: Union[bytes, str, Path]) -> np.ndarray:
    """[H, W] int64 ids of a panoptic PNG given as bytes or a path (must be an RGB image)."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else check_regular(source)
    with Image.open(handle) as image:
        if image.mode != "RGB":
            raise ValueError(f"{_name(source)}: a panoptic PNG must be RGB, got mode {image.mode}")
        return rgb_to_id(np.asarray(image))


def resize_nearest(segment_ids: IdMap, size: tuple[int, int]) -> np.ndarray:
    """``segment_ids`` [h, w] resized to ``size`` (H, W) by PIL's NEAREST on the RGB-encoded image (the
    reference's way; PIL's and torch's nearest pick different source pixels for some scales)."""
    height, width = int(size[0]), int(size[1])
    image = Image.fromarray(id_to_rgb(segment_ids), mode="RGB").resize((width, height), Image.NEAREST)
    return rgb_to_id(np.asarray(image))


def write_png(path: Union[str, Path], segment_ids: IdMap) -> Path:
    """Write ``segment_ids`` as a panoptic PNG, atomically; returns the path."""
    return atomic_write_bytes(path, encode_png(segment_ids))


def segment_bbox(segment_ids: IdMap, segment_id: int) -> list[int]:
    """COCO ``bbox`` [x, y, w, h] (pixels) of ``segment_id`` in ``segment_ids``; [0, 0, 0, 0] if absent."""
    ys, xs = np.nonzero(_as_int64(segment_ids) == segment_id)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def with_bboxes(segment_ids: IdMap, segments_info: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``segments_info`` with the ``bbox`` the COCO panoptic format wants in files."""
    return [{**info, "bbox": segment_bbox(segment_ids, int(info["id"]))} for info in segments_info]


def write_annotations_json(path: Union[str, Path], annotations: list[dict[str, Any]], *,
                           categories: list[dict[str, Any]], images: list[dict[str, Any]]) -> Path:
    """A COCO panoptic JSON (``images``, ``annotations`` = ``[{image_id, file_name, segments_info}]``,
    ``categories`` with ``isthing``), atomically; returns the path."""
    payload = {"images": images, "annotations": annotations, "categories": categories}
    return atomic_write_text(path, json.dumps(payload))


def _as_int64(segment_ids: IdMap) -> np.ndarray:
    if isinstance(segment_ids, torch.Tensor):
        segment_ids = segment_ids.detach().cpu().numpy()
    ids = np.asarray(segment_ids)
    if ids.ndim != 2:
        raise ValueError(f"segment_ids must be [H, W], got {list(ids.shape)}")
    return ids.astype(np.int64)


def _name(source: Union[bytes, str, Path]) -> str:
    return "PNG bytes" if isinstance(source, bytes) else str(source)


def one_based(panoptic: Mapping[str, Any]) -> dict[str, Any]:
    """A panoptic prediction renumbered to COCO's convention: segment ids 1..K, 0 void (the reference's
    post-processing numbers segments from 0, which COCO tools read as void)."""
    info = [{**s, "id": int(s["id"]) + 1} for s in panoptic["segments_info"]]
    ids = torch.as_tensor(panoptic["segment_ids"]).to(torch.int64) + 1
    if not info:
        ids = torch.zeros_like(ids)
    return {"segment_ids": ids, "segments_info": info}
