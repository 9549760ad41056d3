"""One training epoch and one evaluation pass, with progress bars and distributed-safe statistics.

``train_one_epoch`` steps the optimizer and the per-iteration lr scheduler; a non-finite loss on any
process raises :class:`NonFiniteLossError` on every process before anything is updated, so the caller
can stop without touching its last good checkpoint. ``evaluate`` returns loss statistics and feeds
every query of every image to a COCO evaluator.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from detr_core.hardware import Capability, detect
from detr_core.losses import weighted_total
from detr_core.postprocess import postprocess
from detr_core.training import distributed

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message says where. No weights were updated by that step."""


@dataclass
class Precision:
    """Mixed precision: ``amp`` is "none", "bf16" or "fp16" (fp16 uses a GradScaler). On CUDA both; on a CPU
    bf16 only, and only where this CPU runs it natively (:mod:`detr_core.hardware.capability`: AVX512-BF16,
    AMX-BF16, AVX-NE-CONVERT), since emulated bf16 trains ~100× slower than fp32. The losses are computed
    in fp32 either way (:func:`compute_loss`). ``capability``: the machine's (default: detected)."""

    device: torch.device
    amp: str = "none"
    capability: Capability | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.amp not in ("none", *AMP_DTYPES):
            raise ValueError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.amp != "none" and self.device.type != "cuda":
            self._check_cpu()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None

    def _check_cpu(self) -> None:
        if self.amp == "fp16" or self.device.type != "cpu":
            raise ValueError(f"--amp {self.amp} needs a CUDA device (got {self.device}); on a CPU with native "
                             "bf16 use --amp bf16")
        decision = (self.capability or detect()).decide("bf16", "torch")
        if decision.native is not True:
            raise ValueError(f"--amp bf16: this CPU would run bf16 {decision.verdict}, not natively "
                             f"({decision.evidence}); train in fp32 (--amp none)")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.amp])


class Meter:
    """Running means of named numbers (per sample-weighted batch means)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def update(self, values: dict[str, float], n: int = 1) -> None:
        for k, v in values.items():
            self.sums[k] += float(v) * n
        self.count += n

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}


def conv_layout(images: Tensor) -> Tensor:
    """``images`` [B, 3, H, W] in the layout the backbone convolves fastest: channels-last on CPU (oneDNN; the
    shapes default trains 8-15 % more images/s; values are the same up to float rounding), unchanged on other devices."""
    return images.contiguous(memory_format=torch.channels_last) if images.device.type == "cpu" else images


def to_device(batch: tuple[Tensor, Tensor, list[dict]], device: torch.device) -> tuple[Tensor, Tensor, list[dict]]:
    """Move a batch to ``device``, the images in :func:`conv_layout`."""
    images, mask, targets = batch
    moved = [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets]
    return conv_layout(images.to(device, non_blocking=True)), mask.to(device, non_blocking=True), moved


def _float_outputs(outputs: Any) -> Any:
    """Loss computation in fp32 whatever autocast produced."""
    if isinstance(outputs, Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: _float_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_float_outputs(v) for v in outputs]
    return outputs


def _logged(losses: dict[str, Tensor], total: Tensor) -> dict[str, float]:
    """The final layer's losses and metrics (no ``_i`` suffix) plus the weighted total."""
    out = {k: float(v.detach()) for k, v in losses.items() if not k.rsplit("_", 1)[-1].isdigit()}
    out["loss"] = float(total.detach())
    return out


def compute_loss(model: nn.Module, criterion: nn.Module, batch: tuple, precision: Precision,
                 weight_dict: dict[str, float]) -> tuple[Tensor | None, dict[str, Tensor], str]:
    """Forward and criterion; returns (total or None when not finite, losses, problem description)."""
    images, mask, targets = batch
    with precision.autocast():
        outputs = _float_outputs(model(images, mask))
    bad = non_finite_outputs(outputs)
    if bad:  # checked before the matcher, which cannot match NaN costs
        return None, {}, f"loss is not finite: the model's outputs hold NaN/inf ({', '.join(bad)})"
    try:
        losses = criterion(outputs, targets)
        return weighted_total(losses, weight_dict), losses, ""
    except FloatingPointError as exc:
        return None, {}, str(exc) if "not finite" in str(exc) else f"loss is not finite: {exc}"


def non_finite_outputs(outputs: dict[str, Any]) -> list[str]:
    """Names of the prediction tensors (final and auxiliary layers) that hold NaN or inf."""
    layers = [("", outputs), *((f"aux_outputs[{i}].", aux) for i, aux in enumerate(outputs.get("aux_outputs", [])))]
    return [f"{prefix}{key}" for prefix, layer in layers for key in ("pred_logits", "pred_boxes")
            if key in layer and not bool(torch.isfinite(layer[key]).all())]


def check_finite_parameters(model: nn.Module, *, epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` when a parameter holds NaN/inf (an overflowing last step), so such
    weights never replace a good checkpoint."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise NonFiniteLossError(f"epoch {epoch}: loss is not finite: the weights hold NaN/inf after the last "
                                 f"step ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")


def _backward_step(total: Tensor, optimizer: torch.optim.Optimizer, precision: Precision, max_norm: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler = precision.scaler
    if scaler is None:
        total.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(_params(optimizer), max_norm)
        optimizer.step()
        return
    scaler.scale(total).backward()
    if max_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(_params(optimizer), max_norm)
    scaler.step(optimizer)
    scaler.update()


def _params(optimizer: torch.optim.Optimizer) -> Iterator[Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


def progress_bar(loader: Iterable, *, desc: str, progress: bool) -> tqdm:
    """A tqdm bar over ``loader`` shown on the main process only (and only when ``progress``)."""
    return tqdm(loader, desc=desc, disable=not (progress and distributed.is_main_process()), dynamic_ncols=True,
                leave=False, unit="batch")


def train_one_epoch(model: nn.Module, criterion: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler: Any, *, device: torch.device, epoch: int, weight_dict: dict[str, float],
                    precision: Precision | None = None, max_norm: float = 0.1,
                    progress: bool = True) -> dict[str, float]:
    """Train for one pass over ``loader``; returns the epoch means (averaged over processes) and ``lr``."""
    precision = precision or Precision(device)
    model.train()
    criterion.train()
    meter, seen, start = Meter(), 0, time.perf_counter()
    bar = progress_bar(loader, desc=f"epoch {epoch}", progress=progress)
    for step, batch in enumerate(bar):
        batch = to_device(batch, device)
        total, losses, problem = compute_loss(model, criterion, batch, precision, weight_dict)
        if distributed.any_true(total is None, device):
            raise NonFiniteLossError(f"epoch {epoch}, step {step}: {problem or 'loss is not finite on another process'}"
                                     "; stopped before updating the weights")
        _backward_step(total, optimizer, precision, max_norm)
        scheduler.step()
        n = batch[0].shape[0]
        meter.update(_logged(losses, total), n)
        seen += n
        rate = seen / max(1e-9, time.perf_counter() - start)
        bar.set_postfix(loss=f"{float(total.detach()):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", img_s=f"{rate:.1f}")
    stats = distributed.all_reduce_mean(meter.means(), device)
    stats["lr"] = optimizer.param_groups[0]["lr"]
    stats["images_per_s"] = seen * distributed.get_world_size() / max(1e-9, time.perf_counter() - start)
    return stats


def reference_stats(losses: dict[str, Tensor], weight_dict: dict[str, float]) -> dict[str, float]:
    """One batch's statistics as the reference's ``evaluate`` logs them (facebookresearch/detr ``main.py
    --eval``): every weighted loss scaled by its weight (``loss_ce``, ``loss_bbox``, ``loss_giou`` and, with
    auxiliary losses, ``loss_ce_0`` ...), ``loss`` their sum, ``class_error``, and every criterion output
    unscaled with the suffix ``_unscaled`` (``class_error_unscaled``, ``cardinality_error_unscaled``, ...)."""
    scaled = {k: float(v) * weight_dict[k] for k, v in losses.items() if k in weight_dict}
    stats = {**scaled, **{f"{k}_unscaled": float(v) for k, v in losses.items()}, "loss": sum(scaled.values())}
    if "class_error" in losses:
        stats["class_error"] = float(losses["class_error"])
    return stats


@torch.no_grad()
def evaluate(model: nn.Module, criterion: nn.Module | None, loader: Iterable, *, device: torch.device,
             weight_dict: dict[str, float] | None = None, evaluator: Any = None, precision: Precision | None = None,
             progress: bool = True) -> tuple[dict[str, float], dict[str, float] | None]:
    """Loss statistics (when ``criterion``) and, with ``evaluator``, its COCO metrics (main process).

    The statistics are the reference's: :func:`reference_stats` of each batch, averaged over batches (its
    ``MetricLogger`` global average: every batch counts once, whatever its size) and over processes."""
    precision = precision or Precision(device)
    model.eval()
    meter = Meter()
    for batch in progress_bar(loader, desc="eval", progress=progress):
        images, mask, targets = to_device(batch, device)
        with precision.autocast():
            outputs = _float_outputs(model(images, mask))
        bad = non_finite_outputs(outputs)
        if bad:  # scoring NaN scores would print a meaningless AP; the matcher cannot match them either
            ids = [int(t["image_id"]) for t in targets]
            raise NonFiniteLossError(f"the model's outputs hold NaN/inf ({', '.join(bad)}) on image id(s) {ids}: "
                                     "the weights are broken (a diverged run?); nothing was scored")
        if criterion is not None:
            meter.update(reference_stats(criterion(outputs, targets), weight_dict or {}))
        if evaluator is not None and hasattr(evaluator, "process_batch"):  # masks: box AP, mask AP, PQ
            evaluator.process_batch(outputs, targets, (int(images.shape[-2]), int(images.shape[-1])))
        elif evaluator is not None:
            sizes = torch.stack([t["orig_size"] for t in targets])
            results = postprocess(outputs, sizes)
            evaluator.process({int(t["image_id"]): r for t, r in zip(targets, results, strict=True)})
    stats = distributed.all_reduce_mean(meter.means(), device)
    coco = None
    if evaluator is not None:
        evaluator.synchronize_between_processes()
        if distributed.is_main_process():
            coco = evaluator.evaluate()
    return stats, coco


