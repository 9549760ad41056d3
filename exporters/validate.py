"""Validation at export: the artifact, loaded in its own runtime, against the eager model.

Three checks, each a row of the report: (a) a full-canvas batch, (b) real images of different sizes
padded into the canvas with their masks, (c) batch-mate invariance: each real image's outputs in the
artifact's batch equal eager's on that image alone (batch 1, same canvas), and, for batches > 1, the
artifact's outputs follow a permutation of the batch. A row fails when an fp32 max |Δ| exceeds the
tolerance (1e-4) or the detection sets above the score threshold differ.

A segmentation artifact (``pred_masks`` or ``mask_probs``) adds two figures to each row: the max |Δ| of the
masks relative to their scale (:func:`mask_delta`: |Δ| / max(1, max |eager mask|), same tolerance; a trained
mask head's logits reach ±230 at 800 pixels and fp32 rounding of its large activations moves them by ~3e-3,
4e-6 of that scale) and the minimum mask IoU over the confident queries of each image — eager's score
above the threshold, or, when none is, eager's top :data:`MASK_TOP_K` — with sigmoid(mask) > 0.5 on both
sides (over the whole canvas); a row fails below :data:`MASK_IOU_MIN`.

A dynamic artifact replaces (a) by rows at batch 1 and 3 on two canvases (its example canvas and one of
another aspect) with padded masks, and a batch of 3 with an all-False mask; its real images go in
batches of 3, each padded to the largest of its batch.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from exporters.compare import detection_agreement, detections_of, max_abs_diff, output_deltas
from exporters.prepare import prepare_for
from exporters.runtime import Runtime, eager_runtime, load_runtime
from exporters.validation_inputs import example_inputs, full_canvas_batch, validation_images
from exporters.wrapper import MASK_OUTPUT, MASK_POST_OUTPUT, wrap

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor, Tensor]
#: The batch sizes a dynamic artifact is validated at.
DYNAMIC_BATCHES = (1, 3)
#: A confident query's binarised mask must overlap eager's by at least this IoU.
MASK_IOU_MIN = 0.99
#: Queries checked per image when none is above the score threshold: the best by eager's score.
MASK_TOP_K = 3


@dataclass(frozen=True)
class CheckRow:
    """One check: max |Δ| of logits (scores with post-processing) and boxes, detections agreeing; for a
    segmentation artifact also max |Δ| of the masks and the minimum mask IoU of ``mask_queries`` queries."""

    name: str
    max_logits: float
    max_boxes: float
    detections: int
    agreeing: int
    tolerance: float
    max_masks: float | None = None
    mask_iou: float | None = None
    mask_queries: int = 0

    @property
    def ok(self) -> bool:
        masks_ok = self.max_masks is None or (self.max_masks <= self.tolerance and self.mask_iou >= MASK_IOU_MIN)
        return self.max_logits <= self.tolerance and self.max_boxes <= self.tolerance and \
            self.agreeing == self.detections and masks_ok


@dataclass
class ValidationReport:
    """The rows of one artifact's validation; :meth:`table` renders them."""

    format: str
    path: Path
    threshold: float
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def max_abs_diff(self) -> float:
        return max((max(r.max_logits, r.max_boxes, r.max_masks or 0.0) for r in self.rows), default=0.0)

    @property
    def masks(self) -> bool:
        return any(r.max_masks is not None for r in self.rows)

    @property
    def min_mask_iou(self) -> float | None:
        """The lowest mask IoU of any checked query in any row (None for a detector)."""
        return min((r.mask_iou for r in self.rows if r.mask_iou is not None), default=None)

    def table(self) -> str:
        head = f"| check | max abs Δ logits | max abs Δ boxes | detections > {self.threshold:g} agreeing |"
        head += " max Δ masks ÷ scale | min mask IoU (queries) | result |" if self.masks else " result |"
        lines = [head, "|---|---:|---:|---:|" + ("---:|---:|---|" if self.masks else "---|")]
        for r in self.rows:
            masks = f" {r.max_masks:.2e} | {r.mask_iou:.4f} ({r.mask_queries}) |" if self.masks else ""
            lines.append(f"| {r.name} | {r.max_logits:.2e} | {r.max_boxes:.2e} | {r.agreeing}/{r.detections} |"
                         f"{masks} {'ok' if r.ok else 'FAIL'} |")
        return "\n".join(lines)


class ValidationError(RuntimeError):
    """The artifact's outputs differ from eager beyond tolerance; ``report`` has the numbers."""

    def __init__(self, report: ValidationReport, *, note: str = "") -> None:
        failed = ", ".join(r.name for r in report.rows if not r.ok)
        super().__init__(f"{report.path}: {report.format} artifact differs from eager ({failed}); "
                         f"max |Δ| {report.max_abs_diff:.2e}, tolerance {report.rows[0].tolerance:g}"
                         f"{_iou_note(report)}{'; ' + note if note else ''}")
        self.report = report


def _iou_note(report: ValidationReport) -> str:
    iou = report.min_mask_iou
    return "" if iou is None else f", min mask IoU {iou:.4f} (minimum {MASK_IOU_MIN})"


def binary_masks(outputs: dict[str, Tensor]) -> Tensor | None:
    """sigmoid(mask) > 0.5 as bool [B, Q, h, w], from ``pred_masks`` (logits) or ``mask_probs``; None for a
    detector's outputs."""
    if MASK_OUTPUT in outputs:
        return outputs[MASK_OUTPUT].float().sigmoid() > 0.5
    return outputs[MASK_POST_OUTPUT].float() > 0.5 if MASK_POST_OUTPUT in outputs else None


def mask_key(outputs: dict[str, Tensor]) -> str:
    return MASK_OUTPUT if MASK_OUTPUT in outputs else MASK_POST_OUTPUT


def mask_delta(ref: dict[str, Tensor], out: dict[str, Tensor]) -> float:
    """max |Δ| of the masks over max(1, max |ref masks|): absolute for probabilities and small logits, relative
    to the scale of a trained head's logits."""
    key = mask_key(ref)
    scale = max(1.0, float(ref[key].float().abs().max())) if ref[key].numel() else 1.0
    return max_abs_diff(ref[key], out[key]) / scale


def confident_queries(scores: Tensor, *, threshold: float, top_k: int = MASK_TOP_K) -> Tensor:
    """Indices of the queries of one image (``scores`` [Q]) above ``threshold``, else the ``top_k`` best."""
    above = torch.nonzero(scores > threshold).flatten()
    return above if above.numel() else scores.topk(min(top_k, scores.numel())).indices


def mask_ious(ref: Tensor, out: Tensor) -> Tensor:
    """IoU of each pair of bool masks ``ref``, ``out`` [K, h, w] -> [K] (1 where both are empty)."""
    inter = (ref & out).flatten(1).sum(1).double()
    union = (ref | out).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_agreement(ref: dict[str, Tensor], out: dict[str, Tensor], scores: Tensor, *,
                   threshold: float) -> tuple[float, int]:
    """(minimum mask IoU, queries checked) over each image's :func:`confident_queries` by eager's
    ``scores`` [B, Q]."""
    ref_bin, out_bin = binary_masks(ref), binary_masks(out)
    ious = [mask_ious(ref_bin[b, idx], out_bin[b, idx])
            for b in range(scores.shape[0]) for idx in [confident_queries(scores[b], threshold=threshold)]]
    ious_all = torch.cat(ious)
    return float(ious_all.min()) if ious_all.numel() else 1.0, int(ious_all.numel())


def _row(name: str, ref: dict[str, Tensor], out: dict[str, Tensor], orig_sizes: Tensor, *,
         threshold: float, tolerance: float) -> CheckRow:
    d_logits, d_boxes = output_deltas(ref, out, orig_sizes)
    ref_dets = detections_of(ref, orig_sizes)
    union, agree = detection_agreement(ref_dets, detections_of(out, orig_sizes), threshold=threshold)
    if binary_masks(ref) is None:
        return CheckRow(name, d_logits, d_boxes, union, agree, tolerance)
    iou, queries = mask_agreement(ref, out, ref_dets.scores, threshold=threshold)
    return CheckRow(name, d_logits, d_boxes, union, agree, tolerance, mask_delta(ref, out), iou, queries)


def _cat(outputs: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenated along the batch; masks of batches on different canvases (dynamic artifacts) are
    zero-padded to the largest h, w first (0 on both sides: no |Δ|, and not above 0.5 once binarised)."""
    return {k: torch.cat(_same_size([o[k] for o in outputs])) for k in outputs[0]}


def _same_size(tensors: list[Tensor]) -> list[Tensor]:
    if tensors[0].dim() < 4:
        return tensors
    h, w = max(t.shape[-2] for t in tensors), max(t.shape[-1] for t in tensors)
    return [torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2])) for t in tensors]


def _run_batches(runtime: Runtime, batches: list[tuple[Batch, int]]) -> dict[str, Tensor]:
    """The outputs of the real (not filler) rows of every batch, concatenated."""
    return _cat([{k: v[:n] for k, v in runtime(*batch).items()} for batch, n in batches])


def _real_batches(images: list[Tensor], runtime: Runtime) -> list[tuple[Batch, int]]:
    size = DYNAMIC_BATCHES[-1] if runtime.metadata.dynamic else runtime.metadata.batch_size
    chunks = [images[i:i + size] for i in range(0, len(images), size)]
    return [(prepare_for(runtime.metadata, chunk), len(chunk)) for chunk in chunks]


def _alone(eager1: Runtime, batches: list[tuple[Batch, int]]) -> dict[str, Tensor]:
    """Eager on each real image alone (batch 1, same canvas)."""
    rows = [eager1(*(t[i:i + 1] for t in batch)) for batch, n in batches for i in range(n)]
    return _cat(rows)


def _permuted(runtime: Runtime, batches: list[tuple[Batch, int]]) -> dict[str, Tensor]:
    """The artifact on each batch with its rows rolled by one, rolled back."""
    outs = []
    for batch, n in batches:
        rolled = runtime(*(t.roll(1, 0) for t in batch))
        outs.append({k: v.roll(-1, 0)[:n] for k, v in rolled.items()})
    return _cat(outs)


def run_checks(eager: Runtime, artifact: Runtime, images: list[Tensor], description: str, *,
               threshold: float, tolerance: float) -> list[CheckRow]:
    """Full canvas and real images; for batches > 1 also the two batch-mate checks."""
    meta = artifact.metadata
    kw = {"threshold": threshold, "tolerance": tolerance}
    if meta.dynamic:
        rows = dynamic_rows(eager, artifact, **kw)
    else:
        full = full_canvas_batch(batch_size=meta.batch_size, canvas=tuple(meta.input_size))
        rows = [_row(f"full canvas {meta.input_size[0]}x{meta.input_size[1]}, batch {meta.batch_size}",
                     eager(*full), artifact(*full), full[2], **kw)]
    batches = _real_batches(images, artifact)
    sizes = torch.cat([b[2][:n] for b, n in batches])
    real = _run_batches(artifact, batches)
    rows.append(_row(description, _run_batches(eager, batches), real, sizes, **kw))
    if meta.dynamic or meta.batch_size > 1:  # at batch 1 the row above already compares with eager alone
        eager1 = eager_runtime(eager.backend.native, dataclasses.replace(meta, batch_size=1),
                               device=eager.backend.device)
        rows.append(_row("batch-mates: in batch vs eager alone", _alone(eager1, batches), real, sizes, **kw))
        rows.append(_row("batch-mates: permuted batch", real, _permuted(artifact, batches), sizes, **kw))
    return rows


def other_canvas(canvas: tuple[int, int]) -> tuple[int, int]:
    """A canvas of another aspect for dynamic validation: ``canvas`` transposed, or 3/2 as wide if square."""
    h, w = canvas
    return (w, h) if h != w else (h, w * 3 // 2)


def dynamic_rows(eager: Runtime, artifact: Runtime, *, threshold: float, tolerance: float) -> list[CheckRow]:
    """A dynamic artifact at batch 1 and 3 on its example canvas and on :func:`other_canvas`, with padding in
    the masks (each image a different size), and at batch 3 with an all-False mask."""
    canvas = tuple(artifact.metadata.input_size)
    kw = {"threshold": threshold, "tolerance": tolerance}
    rows = []
    for hw in (canvas, other_canvas(canvas)):
        for batch in DYNAMIC_BATCHES:  # orig_sizes is passed always; a raw artifact ignores it
            inputs = example_inputs(batch_size=batch, input_size=hw, with_postprocess=True, seed=batch)
            rows.append(_row(f"dynamic {hw[0]}x{hw[1]}, batch {batch}, padded masks", eager(*inputs),
                             artifact(*inputs), inputs[2], **kw))
    batch, hw = DYNAMIC_BATCHES[-1], other_canvas(canvas)
    full = full_canvas_batch(batch_size=batch, canvas=hw)
    rows.append(_row(f"dynamic {hw[0]}x{hw[1]}, batch {batch}, mask all False", eager(*full), artifact(*full),
                     full[2], **kw))
    return rows


def validate_artifact(model: nn.Module, path: str | Path, *, images: str | Path | None = None,
                      count: int | None = None, threshold: float = 0.5, tolerance: float = 1e-4,
                      device: str = "cpu", raise_on_failure: bool = True) -> ValidationReport:
    """Load ``path`` in its runtime and compare it with ``model`` (eager) on the checks above.

    ``images``: a folder of real images (default: the shapes val set); ``count``: how many (default:
    enough for two batches, at least 3). Logs the table; raises :class:`ValidationError` on failure."""
    artifact = load_runtime(path, device=device)
    meta = artifact.metadata
    eager = eager_runtime(wrap(model, with_postprocess=meta.with_postprocess), meta, device=device)
    real, description = validation_images(images, count=count or max(3, 2 * meta.batch_size))
    report = ValidationReport(meta.format, Path(path), threshold)
    report.rows = run_checks(eager, artifact, real, description, threshold=threshold, tolerance=tolerance)
    logger.info("validation of %s: %s, max |Δ| %.2e%s", path, "ok" if report.ok else "FAILED",
                report.max_abs_diff, _iou_note(report))
    logger.debug("validation table:\n%s", report.table())
    if raise_on_failure and not report.ok:
        raise ValidationError(report)
    return report
