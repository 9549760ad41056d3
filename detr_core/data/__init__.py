"""Data: COCO-format and Pascal VOC datasets, the synthetic-shapes default, DETR transforms, batching, checks."""

from __future__ import annotations

from detr_core.lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use: importing a submodule stays light).
_EXPORTS = {
    "collate_fn": "detr_core.data.batching",
    "make_collate": "detr_core.data.batching",
    "pad_images": "detr_core.data.batching",
    "parse_hw": "detr_core.data.sizes",
    "Report": "detr_core.data.check",
    "check_coco": "detr_core.data.check",
    "check_voc": "detr_core.data.check",
    "validate_num_classes": "detr_core.data.check",
    "CocoDetection": "detr_core.data.coco",
    "DatasetError": "detr_core.data.coco",
    "load_coco_json": "detr_core.data.coco",
    "load_rgb_image": "detr_core.data.coco",
    "CocoPanoptic": "detr_core.data.coco_panoptic",
    "SHAPE_CLASSES": "detr_core.data.shapes",
    "ShapesParams": "detr_core.data.shapes",
    "cache_dir": "detr_core.data.shapes",
    "default_shapes_root": "detr_core.data.shapes",
    "ensure_default_shapes": "detr_core.data.shapes",
    "generate_shapes": "detr_core.data.shapes",
    "STUFF_CLASSES": "detr_core.data.shapes_panoptic",
    "BuiltDataset": "detr_core.data.sources",
    "DatasetSource": "detr_core.data.naming",
    "build_dataset": "detr_core.data.sources",
    "IMAGENET_MEAN": "detr_core.data.transforms",
    "IMAGENET_STD": "detr_core.data.transforms",
    "RandomSizeCrop": "detr_core.data.transforms",
    "ResizeShorterSide": "detr_core.data.transforms",
    "eval_resize_size": "detr_core.data.transforms",
    "fit_size_to_canvas": "detr_core.data.transforms",
    "make_eval_transforms": "detr_core.data.transforms",
    "make_shapes_eval_transforms": "detr_core.data.transforms",
    "make_shapes_train_transforms": "detr_core.data.transforms",
    "make_train_transforms": "detr_core.data.transforms",
    "VOC_CLASSES": "detr_core.data.voc",
    "VocDetection": "detr_core.data.voc",
    "voc_to_coco": "detr_core.data.voc",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
