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
from torch.utils.data import DataLoader

from detr_core.atomic import atomic_write, probe_writable
from detr_core.checkpoint import load_checkpoint, read_checkpoint
from detr_core.config import LossConfig
from detr_core.data.batching import make_collate
from detr_core.data.check import validate_num_classes
from detr_core.data.coco import DatasetError
from detr_core.data.sources import DatasetSource, build_dataset
from detr_core.errors import first_line
from detr_core.evaluation.coco import CocoEvaluator, write_json_atomic
from detr_core.evaluation.ground_truth import coco_ground_truth
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


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    summary: str
    metrics_path: Path
    detections_path: Path


def _stored_run(path: str) -> tuple[dict[str, Any], LossConfig]:
    config = read_checkpoint(path).get("config") or {}
    run = config.get("run") if isinstance(config.get("run"), dict) else {}
    loss = LossConfig.from_dict(config["loss"]) if isinstance(config.get("loss"), dict) else LossConfig()
    return run, loss


def _loader(config: EvalConfig, run: dict[str, Any]) -> tuple[Any, DataLoader]:
    preset = config.transforms or run.get("transforms") or "auto"
    if preset == "auto":
        preset = "shapes" if config.data.is_default else "detr"
    image_size = config.image_size or int(run.get("image_size", 128))
    transforms = eval_transforms(preset, image_size, config.eval_size)
    built = build_dataset(config.data, "val", transforms, shapes_params={"image_size": image_size},
                          progress=config.progress)
    if len(built.dataset) == 0:  # type: ignore[arg-type]
        where = getattr(built.dataset, "ann_file", None) or getattr(built.dataset, "voc_dir", "the val split")
        raise DatasetError(f"{where}: the evaluation set is empty (no images)")
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


def writable_output_dir(path: str | Path) -> Path:
    """Create ``path`` and prove a file can be written in it (a probe file, removed) before any work;
    ``ValueError`` naming ``--output-dir`` (read-only, full, not a folder) otherwise."""
    try:
        return probe_writable(path)
    except OSError as exc:
        raise _output_error(Path(path), exc) from None


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
    out = writable_output_dir(config.output_dir)
    run, loss_config = _stored_run(config.checkpoint)
    model = load_checkpoint(config.checkpoint, **config.model_overrides).to(device)
    dataset, loader = _loader(config, run)
    validate_num_classes(dataset, model.num_classes)
    criterion = build_criterion(loss_config, num_classes=model.num_classes, dec_layers=model.config.dec_layers,
                                aux_loss=model.aux_loss).to(device)
    evaluator = CocoEvaluator(coco_ground_truth(dataset, config.data), backend=config.evaluator)
    stats, coco = evaluate(model, criterion, loader, device=device, weight_dict=criterion.weight_dict,
                           evaluator=evaluator, precision=Precision(device, config.amp), progress=config.progress)
    metrics = {"checkpoint": str(config.checkpoint), "evaluator": config.evaluator, "num_images": len(dataset),
               "loss": stats, "coco_eval_bbox": coco}
    detections, metrics_path = write_eval_outputs(out, evaluator.results(), metrics)
    return EvalResult(metrics, evaluator.summary(), metrics_path, detections)


def format_losses(stats: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(stats.items()))

