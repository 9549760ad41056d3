"""How a command names its data: :class:`DatasetSource` (a light dataclass: the CLI builds it without
importing torch; :mod:`detr_core.data.sources` turns it into a dataset)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

Split = Literal["train", "val"]


@dataclass(frozen=True)
class DatasetSource:
    """Where the data lives; all ``None`` means "the synthetic shapes default".

    ``allow_outside_images``: read an image whose ``file_name`` (COCO) or ``<filename>`` (VOC) leaves its
    images folder (an absolute path, or ``..`` out of it); refused by default. ``yolo_root``: a folder with a
    ``data.yaml`` (:mod:`detr_core.data.yolo`). ``class_map``: model class -> dataset category.
    ``coco_panoptic_path``: COCO panoptic, the reference's layout (``DIR/annotations/panoptic_{split}2017.json``
    + ``DIR/panoptic_{split}2017/`` PNGs; the images from ``{split}_images`` or ``coco_path``, else ``DIR``).
    """

    coco_path: str | None = None
    train_images: str | None = None
    train_ann: str | None = None
    val_images: str | None = None
    val_ann: str | None = None
    voc_root: str | None = None
    voc_year: str = "2007"
    remove_difficult: bool = False
    allow_outside_images: bool = False
    yolo_root: str | None = None
    class_map: str | None = None
    coco_panoptic_path: str | None = None

    @property
    def is_default(self) -> bool:
        """True when no dataset is named (the shapes default is used)."""
        names = ("coco_path", "train_images", "train_ann", "val_images", "val_ann", "voc_root", "yolo_root",
                 "coco_panoptic_path")
        return all(getattr(self, n) is None for n in names)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
