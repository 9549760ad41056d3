"""``detrtool predict --panoptic``: each image's map in COCO panoptic format and as a picture.

Per image, ``ROOT/panoptic/<stem>.png`` holds the segment ids (``id = R + 256 G + 256² B``, the ids of
its ``segments_info``) and ``ROOT/<stem>_panoptic.png`` shows the map: each segment a colour over the
image (things: one colour per instance, stuff: its class colour), thin boundaries, the class name on
every segment large enough to hold it, and a legend below (swatch, name, thing/stuff). At the end,
``ROOT/panoptic.json`` is the COCO panoptic predictions file: ``annotations`` ``[{image_id, file_name,
segments_info [{id, category_id, isthing, area, bbox}]}]`` with ``images`` and ``categories`` (``isthing``).
Every file is written through :mod:`detr_core.atomic`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from torch import Tensor

from detr_core.atomic import make_folder
from detr_core.segmentation.panoptic_format import with_bboxes, write_annotations_json, write_png
from exporters.predict.drawing import class_color, font_path, font_size, instance_color, save_png, text_color
from exporters.predict.run import PanopticImage

SEGMENT_ALPHA = 0.55
BOUNDARY = (255, 255, 255)
LEGEND_FONT = 12


def class_name(category: int, class_names: Sequence[str]) -> str:
    return class_names[category] if 0 <= category < len(class_names) else str(category)


def segment_colors(segments_info: Sequence[Mapping[str, Any]]) -> dict[int, tuple[int, int, int]]:
    """Segment id -> RGB: things by :func:`instance_color` (class, k-th instance), stuff by its class colour."""
    seen: dict[int, int] = {}
    colors = {}
    for info in segments_info:
        category = int(info["category_id"])
        if info["isthing"]:
            colors[int(info["id"])] = instance_color(category, seen.get(category, 0))
            seen[category] = seen.get(category, 0) + 1
        else:
            colors[int(info["id"])] = class_color(category)
    return colors


def colorize(image: Tensor, panoptic: PanopticImage) -> np.ndarray:
    """[H, W, 3] uint8: segment colours blended over ``image`` uint8 [3, H, W], segment boundaries drawn;
    pixels of no listed segment keep the image, darkened."""
    ids = panoptic.segment_ids.numpy()
    pixels = image.permute(1, 2, 0).numpy().astype(np.float32)
    out = pixels * 0.4
    for segment, color in segment_colors(panoptic.segments_info).items():
        inside = ids == segment
        out[inside] = (1 - SEGMENT_ALPHA) * pixels[inside] + SEGMENT_ALPHA * np.asarray(color, np.float32)
    out[_boundaries(ids)] = BOUNDARY
    return out.round().clip(0, 255).astype(np.uint8)


def _boundaries(ids: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels whose right or lower neighbour lies in another segment."""
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:, :-1] |= ids[:, 1:] != ids[:, :-1]
    edge[:-1, :] |= ids[1:, :] != ids[:-1, :]
    return edge


def _anchor(ids: np.ndarray, segment: int) -> tuple[int, int] | None:
    """(x, y) of the segment's pixel nearest its centroid (inside the segment, even for a ring)."""
    ys, xs = np.nonzero(ids == segment)
    if len(xs) == 0:
        return None
    nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return int(xs[nearest]), int(ys[nearest])


def _label_segments(draw: PIL.ImageDraw.ImageDraw, ids: np.ndarray, panoptic: PanopticImage,
                    colors: Mapping[int, tuple[int, int, int]], class_names: Sequence[str]) -> None:
    """The class name on each segment whose area can hold it, on a box of the segment's colour."""
    font = PIL.ImageFont.truetype(font_path(), font_size(*ids.shape))
    for info in panoptic.segments_info:
        text = class_name(int(info["category_id"]), class_names)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        anchor = _anchor(ids, int(info["id"]))
        if anchor is None or info["area"] < 2 * (x1 - x0) * (y1 - y0):
            continue
        x, y = anchor[0] - (x1 - x0) // 2, anchor[1] - (y1 - y0) // 2
        color = colors[int(info["id"])]
        draw.rectangle((x - 1, y - 1, x + x1 - x0 + 1, y + y1 + 1), fill=color)
        draw.text((x - x0, y), text, fill=text_color(color), font=font)


def _legend(width: int, panoptic: PanopticImage, colors: Mapping[int, tuple[int, int, int]],
            class_names: Sequence[str]) -> PIL.Image.Image:
    """A white strip listing every segment: colour swatch, "id: name (thing|stuff)", in columns."""
    font = PIL.ImageFont.truetype(font_path(), LEGEND_FONT)
    entries = [(colors[int(i["id"])], f"{i['id']}: {class_name(int(i['category_id']), class_names)} "
                f"({'thing' if i['isthing'] else 'stuff'})") for i in panoptic.segments_info]
    if not entries:
        entries = [((0, 0, 0), "no segment")]
    row, column = LEGEND_FONT + 6, max(int(font.getlength(text)) for _, text in entries) + LEGEND_FONT + 14
    per_row = max(1, width // column)
    strip = PIL.Image.new("RGB", (width, 4 + row * -(-len(entries) // per_row)), "white")
    draw = PIL.ImageDraw.Draw(strip)
    for k, (color, text) in enumerate(entries):
        x, y = 4 + (k % per_row) * column, 3 + (k // per_row) * row
        draw.rectangle((x, y, x + LEGEND_FONT, y + LEGEND_FONT), fill=color, outline=(0, 0, 0))
        draw.text((x + LEGEND_FONT + 4, y - 1), text, fill=(0, 0, 0), font=font)
    return strip


def draw_panoptic(image: Tensor, panoptic: PanopticImage, class_names: Sequence[str] = ()) -> Tensor:
    """The colourised map of ``panoptic`` over ``image`` uint8 [3, H, W], labelled, with a legend below:
    uint8 [3, H + legend, max(W, 240)]."""
    ids = panoptic.segment_ids.numpy()
    colors = segment_colors(panoptic.segments_info)
    picture = PIL.Image.fromarray(colorize(image, panoptic))
    _label_segments(PIL.ImageDraw.Draw(picture), ids, panoptic, colors, class_names)
    width = max(picture.width, 240)
    legend = _legend(width, panoptic, colors, class_names)
    canvas = PIL.Image.new("RGB", (width, picture.height + legend.height), "white")
    canvas.paste(picture, (0, 0))
    canvas.paste(legend, (0, picture.height))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


class PanopticWriter:
    """Writes each image's panoptic PNG and picture as they come, then ``panoptic.json`` (:meth:`finish`)."""

    def __init__(self, root: Path, *, class_names: Sequence[str], is_thing: Mapping[int, bool]) -> None:
        self.root = Path(root)
        self.class_names = tuple(class_names)
        self.is_thing = dict(is_thing)
        self.annotations: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def add(self, image: Tensor, panoptic: PanopticImage, picture: Path) -> Path:
        """Write ``panoptic/<stem>.png`` and ``<stem>_panoptic.png`` next to ``picture`` (the detections
        PNG); remember the annotation. Returns the colourised picture's path."""
        id_png = self.root / "panoptic" / picture.name
        make_folder(id_png.parent)
        write_png(id_png, panoptic.segment_ids)
        info = with_bboxes(panoptic.segment_ids, panoptic.segments_info)
        self.annotations.append({"file_name": id_png.name, "segments_info": info})
        h, w = panoptic.segment_ids.shape
        self.images.append({"file_name": picture.name, "height": int(h), "width": int(w)})
        return save_png(draw_panoptic(image, panoptic, self.class_names),
                        picture.with_name(picture.stem + "_panoptic.png"))

    def finish(self, image_ids: Sequence[int]) -> Path:
        """``ROOT/panoptic.json``: the COCO panoptic predictions of every image added, in order, with
        ``image_ids`` (those of ``detections.json``)."""
        if len(image_ids) != len(self.images):
            raise ValueError(f"{len(image_ids)} image ids for {len(self.images)} panoptic images")
        annotations = [{"image_id": int(i), **a} for i, a in zip(image_ids, self.annotations, strict=True)]
        images = [{"id": int(i), **im} for i, im in zip(image_ids, self.images, strict=True)]
        categories = [{"id": c, "name": class_name(c, self.class_names), "isthing": int(thing)}
                      for c, thing in sorted(self.is_thing.items())]
        make_folder(self.root)
        return write_annotations_json(self.root / "panoptic.json", annotations, categories=categories,
                                      images=images)
