"""Data: COCO-format and Pascal VOC datasets, the synthetic-shapes default, DETR transforms, batching, checks."""

from detr_core.data.batching import collate_fn, make_collate, pad_images, parse_hw
from detr_core.data.check import Report, check_coco, check_voc, validate_num_classes
from detr_core.data.coco import CocoDetection, DatasetError, load_coco_json, load_rgb_image
from detr_core.data.coco_panoptic import CocoPanoptic
from detr_core.data.shapes import (
    SHAPE_CLASSES,
    ShapesParams,
    cache_dir,
    default_shapes_root,
    ensure_default_shapes,
    generate_shapes,
)
from detr_core.data.shapes_panoptic import STUFF_CLASSES
from detr_core.data.sources import BuiltDataset, DatasetSource, build_dataset
from detr_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomSizeCrop,
    ResizeShorterSide,
    eval_resize_size,
    fit_size_to_canvas,
    make_eval_transforms,
    make_shapes_eval_transforms,
    make_shapes_train_transforms,
    make_train_transforms,
)
from detr_core.data.voc import VOC_CLASSES, VocDetection, voc_to_coco

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "SHAPE_CLASSES", "STUFF_CLASSES", "VOC_CLASSES",
    "BuiltDataset", "CocoDetection", "CocoPanoptic", "DatasetError", "DatasetSource", "RandomSizeCrop", "Report",
    "ResizeShorterSide", "ShapesParams", "VocDetection",
    "build_dataset", "cache_dir", "check_coco", "check_voc", "collate_fn", "default_shapes_root",
    "ensure_default_shapes", "eval_resize_size", "fit_size_to_canvas", "generate_shapes", "load_coco_json",
    "load_rgb_image", "make_collate", "make_eval_transforms", "make_shapes_eval_transforms",
    "make_shapes_train_transforms", "make_train_transforms", "pad_images", "parse_hw",
    "validate_num_classes", "voc_to_coco",
]
