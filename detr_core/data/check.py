"""Dataset checks: a report of images, annotations, boxes per class, sizes and every problem found.

Two kinds of problem, each one line naming the file / image id / annotation id:

- **errors** — the loader would raise or training would be wrong: missing, corrupt or truncated image
  files; images over ``PIL.Image.MAX_IMAGE_PIXELS`` (decompression bombs); unreadable JSON/XML; malformed
  entries; duplicate image / annotation / category ids (both entries named); annotations pointing to
  missing images; category ids absent from ``categories`` or ≥ ``num_classes``; malformed ``bbox``; image
  size differing from the JSON's; a ``file_name`` leaving the images folder (absolute or ``..``; a
  warning instead with ``allow_outside_images``); no images at all.
- **warnings** — documented fix-ups the loader applies, also counted in ``fixups``: boxes with NaN/inf
  coordinates or zero/negative size are dropped, out-of-bounds boxes are clipped to the image, crowd
  annotations are left out of training targets, non-RGB images (grayscale, RGBA, palette, CMYK, 16-bit)
  are converted to RGB, EXIF orientation is applied.

YOLO sets (:func:`check_yolo`, rules of :mod:`detr_core.data.yolo`): each malformed label line and each
class id outside ``names`` is an error; a missing or empty label file (an image with no objects), a
label file without an image and each box fix-up (coordinates outside [0, 1] clipped, zero-size dropped)
are counted warnings.

COCO panoptic sets: :func:`detr_core.data.check_panoptic.check_coco_panoptic` (this module's :class:`Report`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from detr_core.data.box_rules import FIX_CLIPPED, FIX_DEGENERATE, FIX_NONFINITE, inspect_xyxy
from detr_core.data.coco import DatasetError, image_path, load_rgb_image, read_coco_json
from detr_core.data.coco_masks import segmentation_problem
from detr_core.data.integrity import (
    bbox_is_four_numbers,
    duplicate_id_problems,
    outside_reason,
    shape_problems,
)
from detr_core.data.voc import VOC_CLASSES, VocRecord, parse_voc_xml, resolve_voc_dir
from detr_core.data.yolo import (
    YoloImage,
    label_path_of,
    list_images,
    parse_label_line,
    read_data_yaml,
    read_labels,
)
from detr_core.errors import printable
from detr_core.input_files import read_regular_text

_SIZE_BINS = (64, 128, 256, 512, 1024, 2048)
__all__ = ["FIX_CLIPPED", "FIX_CROWD", "FIX_DEGENERATE", "FIX_EXIF", "FIX_NONFINITE", "FIX_OUTSIDE", "Report",
           "check_coco", "check_voc", "check_yolo", "validate_num_classes"]
FIX_OUTSIDE = "file_name outside the images folder read (--allow-outside-images)"
FIX_CROWD = "crowd annotation left out of training targets"
FIX_EXIF = "EXIF orientation applied"
FIX_ORPHAN_LABEL = "label file without an image ignored"


@dataclass
class Report:
    """What :func:`check_coco` / :func:`check_voc` found. ``ok`` is True when there is no error."""

    source: str
    num_images: int = 0
    num_annotations: int = 0
    boxes_per_class: Counter = field(default_factory=Counter)
    size_histogram: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixups: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.errors

    def warn(self, fixup: str, message: str) -> None:
        self.fixups[fixup] += 1
        self.warnings.append(f"{message} — {fixup}")

    def add_image_size(self, h: int, w: int) -> None:
        longer = max(h, w)
        label = next((f"<= {b}" for b in _SIZE_BINS if longer <= b), f"> {_SIZE_BINS[-1]}")
        self.size_histogram[label] += 1

    def format(self) -> str:
        """Human-readable multi-line report, one line per entry (control characters a file's names carry,
        a newline that would forge a line included, are written as escapes)."""
        return "\n".join(printable(line) for line in self._lines())

    def _lines(self) -> list[str]:
        lines = [f"dataset: {self.source}", f"images: {self.num_images}", f"annotations: {self.num_annotations}",
                 "boxes per class:"]
        lines += [f"  {name}: {n}" for name, n in sorted(self.boxes_per_class.items())]
        lines.append("image sizes (longer side):")
        order = [f"<= {b}" for b in _SIZE_BINS] + [f"> {_SIZE_BINS[-1]}"]
        lines += [f"  {k}: {self.size_histogram[k]}" for k in order if self.size_histogram[k]]
        lines.append(f"fix-ups: {sum(self.fixups.values())}")
        lines += [f"  {k}: {n}" for k, n in sorted(self.fixups.items())]
        lines += [f"WARNING {w}" for w in self.warnings]
        lines += [f"ERROR {e}" for e in self.errors]
        lines.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return lines


def _check_image_file(report: Report, path: Path, what: str, expected_hw: tuple[int, int] | None) -> tuple[int, int] | None:
    """Load one image as the dataset would; record errors/fix-ups; return its (h, w) or None."""
    try:
        loaded = load_rgb_image(path)
    except DatasetError as exc:
        report.errors.append(f"{what}: {exc}")
        return None
    for fix in loaded.fixups:
        report.fixups[FIX_EXIF if fix.startswith("EXIF") else fix] += 1
    w, h = loaded.image.size
    report.add_image_size(h, w)
    if expected_hw and all(expected_hw) and expected_hw != (h, w):
        report.errors.append(f"{what}: {path}: annotation says {expected_hw[0]}x{expected_hw[1]} (HxW), "
                             f"the file is {h}x{w}")
    return h, w


def _check_xyxy(report: Report, what: str, box: tuple[float, ...], hw: tuple[int, int] | None) -> bool:
    """Record the fix-ups :func:`inspect_xyxy` applies to a box; True when the box survives loading."""
    verdict = inspect_xyxy(box, hw)  # type: ignore[arg-type]
    for fixup, detail in verdict.fixups:
        report.warn(fixup, f"{what}: {detail}")
    return verdict.box is not None


def _coco_bbox(ann: dict[str, Any]) -> tuple[float, float, float, float] | None:
    bbox = ann.get("bbox")
    if not bbox_is_four_numbers(bbox):
        return None
    x, y, w, h = (float("nan") if v is None else float(v) for v in bbox)
    return x, y, x + w, y + h


def _check_category(report: Report, what: str, cat: Any, categories: dict[int, str], num_classes: int | None) -> bool:
    if not isinstance(cat, int) or cat not in categories:
        report.errors.append(f"{what}: category_id {cat!r} is not in 'categories' (ids {sorted(categories)})")
        return False
    if num_classes is not None and not 0 <= cat < num_classes:
        report.errors.append(f"{what}: category_id {cat} does not fit num_classes={num_classes} "
                             f"(ids must be 0..{num_classes - 1})")
        return False
    return True


def _check_coco_annotation(report: Report, ann: dict[str, Any], sizes: dict[int, Any],
                           categories: dict[int, str], num_classes: int | None) -> None:
    what = f"annotation {ann.get('id', '?')} (image {ann.get('image_id', '?')})"
    if ann.get("image_id") not in sizes:
        report.errors.append(f"{what}: image_id {ann.get('image_id')!r} is not in 'images'")
        return
    if not _check_category(report, what, ann.get("category_id"), categories, num_classes):
        return
    if ann.get("segmentation") not in (None, []):  # instance masks: a segmentation model's data refuses it at load
        problem = segmentation_problem(ann["segmentation"], sizes[ann["image_id"]] or (0, 0))
        if problem:
            report.errors.append(f"{what}: segmentation {problem}")
            return
    box = _coco_bbox(ann)
    if box is None:
        report.errors.append(f"{what}: bbox {ann.get('bbox')!r} is not four numbers [x, y, w, h]")
        return
    if ann.get("iscrowd", 0):
        report.fixups[FIX_CROWD] += 1
        return
    if _check_xyxy(report, what, box, sizes[ann["image_id"]]):
        report.boxes_per_class[categories[ann["category_id"]]] += 1


def _load_json(report: Report, ann_path: Path) -> dict[str, Any] | None:
    """The file's dict when it has COCO's shape (errors recorded otherwise); duplicate ids are recorded too."""
    try:
        data = read_coco_json(ann_path)
    except DatasetError as exc:
        report.errors.append(str(exc))
        return None
    problems = shape_problems(data)
    report.errors += [f"{ann_path}: {p}" for p in problems + (duplicate_id_problems(data) if not problems else [])]
    if not data["images"]:
        report.errors.append(f"{ann_path}: no images (the 'images' list is empty)")
    return None if problems else data


def _size_in_json(info: dict[str, Any]) -> tuple[int, int]:
    h, w = info.get("height"), info.get("width")
    return (h if isinstance(h, int) else 0), (w if isinstance(w, int) else 0)


def _image_file(report: Report, info: dict[str, Any], images_dir: Path, where: str,
                allow_outside: bool) -> Path | None:
    """The image's path, or None (error recorded) when its ``file_name`` leaves the folder unasked."""
    try:
        path = image_path(images_dir, info["file_name"], where=where, allow_outside=allow_outside)
    except DatasetError as exc:
        report.errors.append(str(exc))
        return None
    if reason := outside_reason(info["file_name"], images_dir):
        report.warn(FIX_OUTSIDE, f"{where}: file_name {info['file_name']!r} {reason}")
    return path


def _check_coco_images(report: Report, ann_path: Path, images: list[dict], images_dir: Path, *, progress: bool,
                       allow_outside: bool) -> dict[int, Any]:
    sizes: dict[int, Any] = {}
    for info in tqdm(images, desc="check images", disable=not progress, leave=False):
        path = _image_file(report, info, images_dir, f"{ann_path}: image {info['id']}", allow_outside)
        what = f"image {info['id']}"
        sizes[info["id"]] = path and _check_image_file(report, path, what, _size_in_json(info))
    return sizes


def check_coco(ann_path: str | Path, images_dir: str | Path, num_classes: int | None = None, *,
               progress: bool = False, allow_outside_images: bool = False) -> Report:
    """Check a COCO-format annotation file and its images (every image is decoded, as training would).

    ``allow_outside_images``: a ``file_name`` leaving ``images_dir`` is a warning, not an error."""
    ann_path, images_dir = Path(ann_path), Path(images_dir)
    report = Report(source=f"{ann_path} (images in {images_dir})")
    data = _load_json(report, ann_path)
    if data is None:
        return report
    categories = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
    report.num_images = len(data["images"])
    sizes = _check_coco_images(report, ann_path, data["images"], images_dir, progress=progress,
                               allow_outside=allow_outside_images)
    anns = data["annotations"]
    report.num_annotations = len(anns)
    for ann in tqdm(anns, desc="check annotations", disable=not progress, leave=False):
        _check_coco_annotation(report, ann, sizes, categories, num_classes)
    return report


def _voc_stems(voc_dir: Path, splits: Iterable[str] | None) -> list[str]:
    main = voc_dir / "ImageSets" / "Main"
    files = [main / f"{s}.txt" for s in splits] if splits else sorted(main.glob("*.txt"))
    files = [f for f in files if "_" not in f.stem]  # skip per-class lists such as cat_train.txt
    if not files:
        return sorted(p.stem for p in (voc_dir / "Annotations").glob("*.xml"))
    stems = {line.split()[0] for f in files if f.is_file() for line in read_regular_text(f).splitlines()
             if line.strip()}
    return sorted(stems)


def _check_voc_record(report: Report, record: VocRecord, hw: tuple[int, int] | None, xml: Path) -> None:
    for k, obj in enumerate(record.objects):
        report.num_annotations += 1
        what = f"{xml.name} object {k} ({obj.name})"
        if obj.name not in VOC_CLASSES:
            report.errors.append(f"{what}: unknown VOC class {obj.name!r}")
            continue
        xmin, ymin, xmax, ymax = obj.box
        if _check_xyxy(report, what, (xmin - 1, ymin - 1, xmax, ymax), hw):
            report.boxes_per_class[obj.name] += 1
            report.fixups["difficult objects (kept, flagged)"] += int(obj.difficult)


def check_voc(root: str | Path, *, year: str = "2007", splits: Iterable[str] | None = None,
              progress: bool = False, allow_outside_images: bool = False) -> Report:
    """Check a VOCdevkit: split files, every annotation XML, every image (decoded) and every box.

    ``allow_outside_images``: a ``<filename>`` leaving ``JPEGImages`` is a warning, not an error."""
    try:
        voc_dir = resolve_voc_dir(root, year)
    except DatasetError as exc:
        return Report(source=str(root), errors=[str(exc)])
    report = Report(source=str(voc_dir))
    for stem in tqdm(_voc_stems(voc_dir, splits), desc="check VOC", disable=not progress, leave=False):
        xml = voc_dir / "Annotations" / f"{stem}.xml"
        try:
            record = parse_voc_xml(xml)
        except DatasetError as exc:
            report.errors.append(str(exc))
            continue
        report.num_images += 1
        path = _image_file(report, {"file_name": record.filename}, voc_dir / "JPEGImages", str(xml),
                           allow_outside_images)
        hw = path and _check_image_file(report, path, f"{xml.name}", record.size)
        _check_voc_record(report, record, hw, xml)
    if not report.num_images and not report.errors:
        report.errors.append(f"{voc_dir}: no images (no annotation XML listed in ImageSets/Main or Annotations)")
    return report


def _check_yolo_image(report: Report, path: Path, num_classes: int, names: tuple[str, ...]) -> None:
    """One image and its label file: each malformed line / out-of-range class is its own error; a missing
    or empty label file and each box fix-up are counted warnings."""
    item = _yolo_labels(report, path, num_classes)
    hw = _check_image_file(report, path, str(path), None)
    for fix in item.fixups:
        report.warn(fix, f"{item.label_path}")
    for obj in item.objects:
        report.num_annotations += 1
        if hw and _check_xyxy(report, f"{item.label_path} line {obj.line}", obj.xyxy(*hw), hw):
            report.boxes_per_class[names[obj.label]] += 1


def _yolo_labels(report: Report, path: Path, num_classes: int) -> YoloImage:
    """The image's labels with every bad line recorded as an error (and left out), not just the first."""
    label_path = label_path_of(path)
    try:
        return read_labels(path, num_classes)
    except DatasetError as exc:
        first = str(exc)
    item = YoloImage(path, label_path)
    try:
        lines = read_regular_text(label_path).splitlines()
    except (OSError, UnicodeDecodeError):  # the file itself is unreadable (a fifo, not text): read_labels said so
        report.errors.append(first)
        return item
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            item.objects.append(parse_label_line(text, str(label_path), num_classes, n))
        except DatasetError as exc:
            report.errors.append(str(exc))
    return item


def _orphan_labels(report: Report, images_dir: Path, images: list[Path]) -> None:
    labels_dir = label_path_of(images_dir / "x.png").parent
    if labels_dir == images_dir or not labels_dir.is_dir():
        return
    expected = {label_path_of(p) for p in images}
    for label in sorted(labels_dir.rglob("*.txt")):
        if label not in expected:
            report.warn(FIX_ORPHAN_LABEL, f"{label}: no image {label.stem}.* in {images_dir}")


def check_yolo(root: str | Path, *, splits: Iterable[str] | None = None, progress: bool = False) -> Report:
    """Check a YOLO dataset: ``data.yaml``, every image of its splits (decoded), every label line."""
    try:
        layout = read_data_yaml(root)
    except DatasetError as exc:
        return Report(source=str(root), errors=[str(exc)])
    report = Report(source=str(layout.yaml_path))
    for split in splits or list(layout.splits):
        try:
            folder = layout.images_dir(split)
        except DatasetError as exc:
            report.errors.append(str(exc))
            continue
        images = list_images(folder)
        if not images:
            report.errors.append(f"{folder}: no images in the {split} folder")
        for path in tqdm(images, desc=f"check YOLO {split}", disable=not progress, leave=False):
            report.num_images += 1
            _check_yolo_image(report, path, len(layout.names), layout.names)
        _orphan_labels(report, folder, images)
    return report


def _category_ids(dataset_or_ann: Any) -> list[int]:
    if hasattr(dataset_or_ann, "category_ids"):
        return list(dataset_or_ann.category_ids)
    data = dataset_or_ann
    if isinstance(data, str | Path):
        data = json.loads(read_regular_text(data))
    ids = {c["id"] for c in data.get("categories", [])} | {a["category_id"] for a in data.get("annotations", [])}
    return sorted(ids)


def validate_num_classes(dataset_or_ann: Any, num_classes: int) -> None:
    """Refuse (``ValueError``) a dataset whose category ids do not fit ``num_classes`` (DETR: max id + 1).

    ``dataset_or_ann``: a dataset with ``category_ids`` (CocoDetection, VocDetection), a COCO dict or the
    path of a COCO JSON file. Call it before training starts.
    """
    ids = _category_ids(dataset_or_ann)
    bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < num_classes]
    if bad:
        needed = max(i for i in ids if isinstance(i, int)) + 1
        raise ValueError(
            f"dataset category ids {bad[:10]} do not fit num_classes={num_classes}: DETR needs "
            f"num_classes = max category id + 1 = {needed} (ids must be 0..{num_classes - 1})"
        )
