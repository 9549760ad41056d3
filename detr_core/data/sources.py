"""How a command names its data (:class:`DatasetSource`) and how that becomes a dataset.

Precedence: ``voc_root`` → ``yolo_root`` → explicit ``{split}_images``/``{split}_ann`` → ``coco_path`` (reference layout
``DIR/{split}2017`` + ``DIR/annotations/instances_{split}2017.json``) → the cached synthetic shapes when
nothing is given. VOC splits: ``train`` reads ``trainval``; ``val`` reads ``test`` for VOC2007 when
``ImageSets/Main/test.txt`` exists, else ``val``. YOLO splits are ``data.yaml``'s ``train`` / ``val``.
A ``coco_path`` that is a VOC folder (``Annotations/`` + ``ImageSets/Main/``, no COCO annotations) is read
as ``voc_root`` and said so (:func:`recognise_voc`): the reference's ``--coco_path VOCdevkit/VOC2007``.

``class_map`` (``coco-voc`` or a JSON file, :mod:`detr_core.data.class_map`) says which dataset category
each model class is; it travels with the data and does not name any.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

from torch.utils.data import Dataset

from detr_core.data.coco import CocoDetection, DatasetError, Transforms
from detr_core.data.shapes import ShapesParams, ensure_default_shapes
from detr_core.data.voc import VocDetection, resolve_voc_dir
from detr_core.data.yolo import YoloDetection

logger = logging.getLogger(__name__)

Split = Literal["train", "val"]


@dataclass(frozen=True)
class DatasetSource:
    """Where the data lives; all ``None`` means "the synthetic shapes default".

    ``allow_outside_images``: read an image whose ``file_name`` (COCO) or ``<filename>`` (VOC) leaves its
    images folder (an absolute path, or ``..`` out of it); refused by default. ``yolo_root``: a folder with a
    ``data.yaml`` (:mod:`detr_core.data.yolo`). ``class_map``: model class -> dataset category.
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

    @property
    def is_default(self) -> bool:
        """True when no dataset is named (the shapes default is used)."""
        names = ("coco_path", "train_images", "train_ann", "val_images", "val_ann", "voc_root", "yolo_root")
        return all(getattr(self, n) is None for n in names)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class BuiltDataset(NamedTuple):
    """``build_dataset``'s answer: the dataset, DETR's ``num_classes`` (max id + 1) and names by id."""

    dataset: Dataset
    num_classes: int
    class_names: list[str]


def coco_split_paths(source: DatasetSource, split: Split) -> tuple[Path, Path]:
    """(images dir, annotation file) of ``split``; explicit paths win over ``coco_path``."""
    images = getattr(source, f"{split}_images")
    ann = getattr(source, f"{split}_ann")
    if source.coco_path is not None:
        root = Path(source.coco_path)
        images = images or root / f"{split}2017"
        ann = ann or root / "annotations" / f"instances_{split}2017.json"
    if images is None or ann is None:
        raise DatasetError(f"the {split} split needs both --{split}-images and --{split}-ann (or --coco-path)")
    return Path(images), Path(ann)


def voc_split_name(source: DatasetSource, split: Split) -> str:
    if split == "train":
        return "trainval"
    voc_dir = resolve_voc_dir(source.voc_root, source.voc_year)  # type: ignore[arg-type]
    has_test = (voc_dir / "ImageSets" / "Main" / "test.txt").is_file()
    return "test" if source.voc_year == "2007" and has_test else "val"


def build_dataset(source: DatasetSource, split: Split, transforms: Transforms | None = None, *,
                  shapes_params: dict[str, Any] | None = None, progress: bool = True,
                  cache_images: bool = False) -> BuiltDataset:
    """The dataset for ``split`` plus the ``num_classes``/``class_names`` it implies.

    ``shapes_params`` (``ShapesParams`` fields) apply only to the shapes default; ``cache_images`` keeps
    decoded images in memory.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if source.voc_root is not None:
        ds = VocDetection(source.voc_root, year=source.voc_year, split=voc_split_name(source, split),
                          transforms=transforms, remove_difficult=source.remove_difficult,
                          cache_images=cache_images, allow_outside_images=source.allow_outside_images)
        return BuiltDataset(ds, ds.num_classes, ds.class_names)
    if source.yolo_root is not None:
        yolo = YoloDetection(source.yolo_root, split=split, transforms=transforms, cache_images=cache_images)
        return BuiltDataset(yolo, yolo.num_classes, yolo.class_names)
    if source.is_default:
        root = ensure_default_shapes(progress=progress, **(shapes_params or {}))
        source = DatasetSource(coco_path=str(root))
        logger.info("no dataset given: using the synthetic shapes at %s", root)
    images, ann = coco_split_paths(source, split)
    ds = CocoDetection(images, ann, transforms=transforms, cache_images=cache_images,
                       allow_outside_images=source.allow_outside_images)
    return BuiltDataset(ds, ds.num_classes, ds.class_names)


def _voc_year_of(folder: Path) -> str | None:
    """``"2007"``/``"2012"`` when ``folder`` is a VOC year folder (``Annotations/`` + ``ImageSets/Main/``)."""
    if not ((folder / "Annotations").is_dir() and (folder / "ImageSets" / "Main").is_dir()):
        return None
    return "2012" if folder.name.endswith("2012") else "2007"


def recognise_voc(source: DatasetSource) -> DatasetSource:
    """``source`` with a ``coco_path`` that is a VOC folder (a VOCdevkit year folder, or a VOCdevkit holding
    one) and holds no COCO annotations read as ``voc_root`` (logged); unchanged otherwise."""
    if source.coco_path is None or source.voc_root is not None:
        return source
    root = Path(source.coco_path)
    if (root / "annotations").is_dir():
        return source
    folder = next((f for f in (root, root / f"VOC{source.voc_year}", root / "VOC2007", root / "VOC2012")
                   if _voc_year_of(f)), None)
    if folder is None:
        return source
    year = _voc_year_of(folder)
    logger.info("--coco-path %s is a Pascal VOC%s folder (Annotations/, ImageSets/Main/, no annotations/ "
                "folder): read as --voc-root %s --voc-year %s", root, year, folder, year)
    return replace(source, coco_path=None, voc_root=str(folder), voc_year=str(year))


def default_shapes_params() -> ShapesParams:
    """The shapes default's parameters (for callers picking transforms/sizes)."""
    return ShapesParams()
