"""``detrtool eval``: a checkpoint on a dataset's val split -> loss stats, the 12 COCO numbers,
``metrics.json`` and ``detections.json`` (every query of every image, COCO results format)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from detr_core.atomic import atomic_write, file_identity, probe_writable, refuse_link
from detr_core.checkpoint import model_from_checkpoint, read_checkpoint
from detr_core.config import LossConfig
from detr_core.data.batching import make_collate
from detr_core.data.check import validate_num_classes
from detr_core.data.class_map import ResolvedClassMap, data_names_of, load_class_map, mismatch_warning
from detr_core.data.coco import DatasetError
from detr_core.data.sources import DatasetSource, build_dataset
from detr_core.errors import first_line
from detr_core.evaluation.class_mapped import ClassMappedEvaluator, map_targets
from detr_core.evaluation.coco import write_json_atomic
from detr_core.evaluation.ground_truth import coco_ground_truth, dataset_where, make_evaluator
from detr_core.losses import build_criterion
from detr_core.presets import eval_transforms
from detr_core.training.engine import Precision, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    data: DatasetSource = field(default_factory=DatasetSource)
    output_dir: str = "eval"
    batch_size: int = 2
    num_workers: int = 0
    pad_to: tuple[int, int] | None = None
    device: str = "cpu"
    amp: str = "none"
    evaluator: str = "faster"
    transforms: str | None = None  # detr / shapes; None: the checkpoint's run, else by dataset
    image_size: int | None = None
    eval_size: int | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. nheads=4 for official files
    progress: bool = True
    aux_loss: bool = True  # False: the reference's --no_aux_loss (no auxiliary decoder layers in the loss)
    panoptic_threshold: float = 0.85  # segmentation models: class score for a query to enter the panoptic map
    masks: bool | None = None  # True: the checkpoint must be a segmentation model; False: score its boxes only


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    summary: str
    metrics_path: Path
    detections_path: Path


def _stored_run(ckpt: dict[str, Any]) -> tuple[dict[str, Any], LossConfig]:
    """(the run config, the loss config) a checkpoint dict stores (defaults when it stores none)."""
    config = ckpt.get("config") or {}
    run = config.get("run") if isinstance(config.get("run"), dict) else {}
    loss = LossConfig.from_dict(config["loss"]) if isinstance(config.get("loss"), dict) else LossConfig()
    return run, loss


def _loader(config: EvalConfig, run: dict[str, Any], *, masks: bool = False) -> tuple[Any, DataLoader]:
    preset = config.transforms or run.get("transforms") or "auto"
    if preset == "auto":
        preset = "shapes" if config.data.is_default else "detr"
    image_size = config.image_size or int(run.get("image_size", 128))
    transforms = eval_transforms(preset, image_size, config.eval_size)
    built = build_dataset(config.data, "val", transforms, shapes_params={"image_size": image_size},
                          progress=config.progress, masks=masks)
    if len(built.dataset) == 0:  # type: ignore[arg-type]
        raise DatasetError(f"{dataset_where(built.dataset)}: the evaluation set is empty (no images)")
    loader = DataLoader(built.dataset, batch_size=config.batch_size, shuffle=False,
                        num_workers=config.num_workers, collate_fn=make_collate(config.pad_to))
    return built.dataset, loader


def eval_device(name: str) -> torch.device:
    """``torch.device(name)``, refused (``ValueError``, one line naming ``--device``) when it is not a device
    name or its backend is not available on this machine (e.g. ``cuda`` without a GPU)."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: not a device name ({first_line(exc)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (torch.cuda.is_available() "
                         "is False); use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def _output_error(path: Path, exc: OSError) -> ValueError:
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return ValueError(f"--output-dir {path}: cannot write there ({reason}); previous outputs left as they were")


OUTPUT_NAMES = ("detections.json", "metrics.json")


def writable_output_dir(path: str | Path, inputs: tuple[Any, ...] = ()) -> Path:
    """Create ``path`` and prove a file can be written in it (a probe file, removed) before any work;
    ``ValueError`` naming ``--output-dir`` (read-only, full, not a folder) otherwise. The files it will hold
    (:data:`OUTPUT_NAMES`) may not be links (refused, not followed) nor any of ``inputs`` (the checkpoint, the
    annotation file): an evaluation never writes over what it reads."""
    try:
        out = probe_writable(path)
        for name in OUTPUT_NAMES:
            refuse_link(out / name)
    except OSError as exc:
        raise _output_error(Path(path), exc) from None
    given = {file_identity(Path(p)): p for p in inputs if isinstance(p, (str, Path)) and p}
    for name in OUTPUT_NAMES:
        if (key := file_identity(out / name)) is not None and key in given:
            raise ValueError(f"--output-dir {path}: {out / name} is {given[key]}, an input of this evaluation; "
                             "choose another --output-dir")
    return out


def write_eval_outputs(out: Path, detections: list[dict[str, Any]], metrics: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``detections.json`` and ``metrics.json`` as a pair: the detections' temp file is written and
    synced, then metrics.json is replaced atomically, then detections.json; a failure before that last
    rename (full disk, read-only) leaves both previous files untouched (``ValueError`` naming the folder)."""
    def write_detections(handle: Any) -> None:
        json.dump(detections, handle)
        handle.flush()
        os.fsync(handle.fileno())
        write_json_atomic(out / "metrics.json", metrics)

    try:
        return atomic_write(out / "detections.json", write_detections, binary=False), out / "metrics.json"
    except OSError as exc:
        raise _output_error(out, exc) from None


def evaluate_checkpoint(config: EvalConfig) -> EvalResult:
    """Evaluate ``config.checkpoint``; writes metrics.json and detections.json into ``output_dir``
    (:func:`write_eval_outputs`). The device and the output folder are checked before any work."""
    device = eval_device(config.device)
    out = writable_output_dir(config.output_dir, (config.checkpoint, *vars(config.data).values()))
    ckpt = read_checkpoint(config.checkpoint)
    run, loss_config = _stored_run(ckpt)
    overrides = {**config.model_overrides, **({} if config.aux_loss else {"aux_loss": False})}
    if config.masks is False:
        overrides["masks"] = False
    model = model_from_checkpoint(ckpt, config.checkpoint, **overrides).to(device)
    if config.masks and not model.config.masks:
        raise ValueError(f"--masks: {config.checkpoint} is a detector checkpoint (no mask head); segmentation "
                         "metrics need a panoptic checkpoint (train one with `detrtool train --masks`)")
    return evaluate_model(model, config, run=run, loss_config=loss_config, device=device, out=out)


def evaluate_model(model: nn.Module, config: EvalConfig, *, run: dict[str, Any] | None = None,
                   loss_config: LossConfig | None = None, device: torch.device | None = None,
                   out: Path | None = None) -> EvalResult:
    """Evaluate a loaded ``model`` (a ``DETR``: ``num_classes``, ``aux_loss``, ``config``) as
    :func:`evaluate_checkpoint` does: the guardrail or the class map, loss statistics, the 12 COCO numbers."""
    device = device or eval_device(config.device)
    out = out or writable_output_dir(config.output_dir, (config.checkpoint, *vars(config.data).values()))
    model.aux_loss = bool(model.aux_loss and config.aux_loss)
    masks = bool(model.config.masks)
    dataset, loader = _loader(config, run or {}, masks=masks)
    class_map = _class_map(config, model, dataset)
    if class_map is None:
        validate_num_classes(dataset, model.num_classes)
    if masks and class_map is not None:
        raise ValueError("--class-map: class-mapped scoring covers boxes only; a segmentation checkpoint is "
                         "evaluated on its own classes")
    criterion = build_criterion(loss_config or LossConfig(), num_classes=model.num_classes,
                                dec_layers=model.config.dec_layers, aux_loss=model.aux_loss, masks=masks).to(device)
    coco_gt = coco_ground_truth(dataset, config.data)
    evaluator: Any = make_evaluator(coco_gt, config.evaluator, masks=masks, dataset=dataset,
                                    is_thing=_is_thing(model.config, dataset), panoptic_threshold=config.panoptic_threshold)
    if class_map is not None:
        evaluator = ClassMappedEvaluator(evaluator, class_map)
        loader = DataLoader(loader.dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers,
                            collate_fn=MappedCollate(make_collate(config.pad_to), class_map.inverse()))
    stats, coco = evaluate(model, criterion, loader, device=device, weight_dict=criterion.weight_dict,
                           evaluator=evaluator, precision=Precision(device, config.amp), progress=config.progress)
    if class_map is not None:
        log.info("%s", evaluator.dropped_line())
    metrics = {"checkpoint": str(config.checkpoint), "evaluator": config.evaluator, "num_images": len(dataset),
               "num_batches": len(loader), "batch_size": config.batch_size, "aux_loss": model.aux_loss,
               "loss_averaging": LOSS_AVERAGING, "loss": stats, **_coco_metrics(coco),
               "class_map": None if class_map is None else {"name": class_map.name, "dropped": evaluator.dropped,
                                                            "kept": evaluator.kept}}
    detections, metrics_path = write_eval_outputs(out, evaluator.results(), metrics)
    return EvalResult(metrics, evaluator.summary(), metrics_path, detections)


def _is_thing(model_config: Any, dataset: Any) -> dict[int, bool]:
    """The things/stuff map for panoptic output: the checkpoint's (``stuff_classes``) when it has one, else the
    dataset's categories (an official panoptic checkpoint on COCO panoptic), else every class a thing."""
    data_map = getattr(dataset, "is_thing", None)
    if model_config.stuff_classes or not data_map:
        return model_config.is_thing()
    log.info("things/stuff of the panoptic output: the dataset's categories (the checkpoint records none)")
    return {c: bool(data_map.get(c, True)) for c in range(model_config.num_classes + 1)}


def _coco_metrics(coco: dict[str, Any] | None) -> dict[str, Any]:
    """``coco_eval_bbox``; for a panoptic model also ``coco_eval_masks`` and ``panoptic`` (PQ, SQ, RQ ...)."""
    if coco is None or "bbox" not in coco:
        return {"coco_eval_bbox": coco}
    return {"coco_eval_bbox": coco["bbox"], "coco_eval_masks": coco["segm"], "panoptic": coco["panoptic"]}


#: How ``metrics["loss"]`` is averaged (the reference's MetricLogger global average).
LOSS_AVERAGING = "per batch (each batch counts once, as the reference's MetricLogger global average)"


class MappedCollate:
    """``collate`` then :func:`map_targets`: the loss compares model class ids with model class ids."""

    def __init__(self, collate: Any, inverse: dict[int, int]):
        self.collate, self.inverse = collate, inverse

    def __call__(self, batch: list) -> tuple:
        images, mask, targets = self.collate(batch)
        return images, mask, map_targets(targets, self.inverse)


def _class_map(config: EvalConfig, model: nn.Module, dataset: Any) -> ResolvedClassMap | None:
    """The resolved ``--class-map``; without one, the guardrail: one WARNING when the checkpoint's class names
    and the dataset's category names disagree on ids they share."""
    model_names = tuple(getattr(model.config, "class_names", ()) or ())
    data_names = data_names_of(getattr(dataset, "class_names", []))
    if config.data.class_map is None:
        warning = mismatch_warning(model_names, model.num_classes, data_names)
        if warning:
            log.warning("%s", warning)
        return None
    resolved = load_class_map(config.data.class_map, model_names=model_names, num_model_classes=model.num_classes,
                              data_names=data_names)
    log.info("class map %s: %d model classes scored as dataset categories", resolved.name, len(resolved.model_to_data))
    return resolved


def format_losses(stats: dict[str, float]) -> str:
    """``key=value`` pairs, sorted, 4 decimals."""
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(stats.items()))
