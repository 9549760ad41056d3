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
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import Dataset

from detr_core.data.coco import CocoDetection, DatasetError, Transforms
from detr_core.data.coco_panoptic import CocoPanoptic, panoptic_split_paths
from detr_core.data.naming import DatasetSource, Split
from detr_core.data.shapes import ensure_default_shapes
from detr_core.data.voc import VocDetection, resolve_voc_dir
from detr_core.data.yolo import YoloDetection

logger = logging.getLogger(__name__)

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
                  cache_images: bool = False, masks: bool = False) -> BuiltDataset:
    """The dataset for ``split`` plus the ``num_classes``/``class_names`` it implies.

    ``shapes_params`` (``ShapesParams`` fields) apply only to the shapes default; ``cache_images`` keeps
    decoded images in memory. ``masks``: targets carry ``masks`` (a segmentation model): COCO panoptic with
    ``coco_panoptic_path`` (and the shapes default, whose panoptic variant is used), COCO instance masks
    otherwise; VOC and YOLO boxes have no masks (refused).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if masks:
        return _segmentation_dataset(source, split, transforms, shapes_params=shapes_params, progress=progress,
                                     cache_images=cache_images)
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


def _segmentation_dataset(source: DatasetSource, split: Split, transforms: Transforms | None, *,
                          shapes_params: dict[str, Any] | None, progress: bool, cache_images: bool) -> BuiltDataset:
    """``build_dataset(..., masks=True)``: COCO panoptic, or COCO instances with their masks."""
    if source.voc_root is not None or source.yolo_root is not None:
        kind = "--voc-root" if source.voc_root is not None else "--yolo-root"
        raise DatasetError(f"{kind}: Pascal VOC / YOLO labels hold boxes only, a segmentation model (--masks) needs "
                           "COCO instance masks (--coco-path, --{train,val}-ann) or COCO panoptic (--coco-panoptic-path)")
    if source.is_default:
        root = ensure_default_shapes(progress=progress, panoptic=True, **(shapes_params or {}))
        source = DatasetSource(coco_path=str(root), coco_panoptic_path=str(root))
        logger.info("no dataset given: using the synthetic shapes, panoptic variant, at %s", root)
    if source.coco_panoptic_path is not None:
        images, ann, pngs = panoptic_source_paths(source, split)
        ds = CocoPanoptic(images, ann, pngs, transforms=transforms, cache_images=cache_images,
                          allow_outside_images=source.allow_outside_images)
        return BuiltDataset(ds, ds.num_classes, ds.class_names)
    images, ann = coco_split_paths(source, split)
    ds = CocoDetection(images, ann, transforms=transforms, cache_images=cache_images,
                       allow_outside_images=source.allow_outside_images, masks=True)
    return BuiltDataset(ds, ds.num_classes, ds.class_names)


def panoptic_source_paths(source: DatasetSource, split: Split) -> tuple[Path, Path, Path]:
    """(images dir, panoptic JSON, panoptic PNG dir) of ``split``: :func:`panoptic_split_paths` of
    ``coco_panoptic_path``, the images from ``{split}_images`` or ``coco_path`` when given."""
    root = Path(source.coco_panoptic_path)  # type: ignore[arg-type]
    _, ann, pngs = panoptic_split_paths(root, split)
    images = getattr(source, f"{split}_images") or Path(source.coco_path or root) / f"{split}2017"
    return Path(images), ann, pngs


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
