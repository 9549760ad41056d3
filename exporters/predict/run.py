"""Detections on users' images from any runtime: read, prepare, run in batches, post-process.

The same :func:`exporters.prepare.prepare` as export and bench turns images into ``(images, mask,
orig_sizes)`` (eval resize rule capped to the canvas, normalisation, padding, live mask); the runtime is
anything that maps ``(images, mask)`` to DETR's raw outputs (``pred_logits``, ``pred_boxes``) or to
post-processed ``scores``/``labels``/``boxes`` (artifacts exported ``--with-postprocess``). Detections
come back in the pixels of each original (upright) image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from detr_core.cross_attention import capture_cross_attention, crop_to_image
from detr_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from detr_core.errors import first_line
from detr_core.postprocess import postprocess_tensors
from exporters.image_inputs import Failure, InputImage, read_image
from exporters.prepare import prepare

logger = logging.getLogger(__name__)

Runtime = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


@dataclass(frozen=True)
class InputSpec:
    """How images become model inputs (:func:`exporters.prepare.prepare`): the canvas (H, W) or None (pad
    to the batch), the resize rule, the static batch of an artifact (None: any; a shorter last batch is
    filled up by ``prepare`` and the fill's outputs dropped), the normalisation, and ``min_canvas``: the
    smallest (H, W) a dynamic artifact takes (``canvas`` None: padded to the batch's largest, at least that)."""

    canvas: tuple[int, int] | None
    size: int
    max_size: int | None
    batch: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    min_canvas: tuple[int, int] | None = None


@dataclass
class ImageDetections:
    """One image's detections, best first: ``boxes`` [N, 4] x0, y0, x1, y1 in original pixels,
    ``scores`` [N], ``labels`` [N] int64, ``queries`` [N] (decoder query of each), ``attention``
    [N, H, W] over the image when asked for."""

    image: InputImage
    scores: Tensor
    labels: Tensor
    boxes: Tensor
    queries: Tensor
    attention: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.numel())


class EagerRuntime:
    """A ``DETR`` in eval mode as a runtime; with ``capture_attention`` it also records the decoder's last
    cross-attention maps of each call (``last_attention`` [B, Q, h, w])."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", *, capture_attention: bool = False):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.capture_attention = capture_attention
        self.last_attention: Tensor | None = None

    @torch.inference_mode()
    def __call__(self, images: Tensor, mask: Tensor, orig_sizes: Tensor) -> dict[str, Tensor]:
        images, mask = images.to(self.device), mask.to(self.device)
        if not self.capture_attention:
            out = self.model(images, mask)
        else:
            with capture_cross_attention(self.model) as capture:
                out = self.model(images, mask)
            self.last_attention = capture.maps().cpu()
        return {"pred_logits": out["pred_logits"].cpu(), "pred_boxes": out["pred_boxes"].cpu()}


def select_detections(scores: Tensor, threshold: float, top_k: int | None = None) -> Tensor:
    """Query indices with ``score > threshold``, highest score first (at most ``top_k``)."""
    keep = torch.nonzero(scores > threshold).flatten()
    keep = keep[scores[keep].argsort(descending=True, stable=True)]
    return keep[:top_k] if top_k is not None else keep


def to_detections(outputs: dict[str, Tensor], orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(scores [B, Q], labels [B, Q], boxes [B, Q, 4] pixels) from raw or post-processed outputs."""
    if "scores" in outputs:
        return outputs["scores"].float(), outputs["labels"].long(), outputs["boxes"].float()
    return postprocess_tensors(outputs["pred_logits"].float(), outputs["pred_boxes"].float(), orig_sizes)


@dataclass
class Predictor:
    """Runs ``runtime`` on batches of images prepared by ``spec``; see :meth:`predict`.

    ``attention_runtime``: an :class:`EagerRuntime` with ``capture_attention`` (the runtime itself when it
    is eager) whose maps are attached to the top ``attention_top_k`` detections of each image.
    """

    runtime: Runtime
    spec: InputSpec
    threshold: float = 0.7
    batch_size: int = 1
    top_k: int | None = None
    attention_runtime: EagerRuntime | None = None
    attention_top_k: int = 6
    class_names: tuple[str, ...] = field(default=())

    def predict(self, paths: Iterable[Path]) -> Iterator[ImageDetections | Failure]:
        """Per path, in order: its detections, or a :class:`Failure` (unreadable file, failed batch)."""
        batch: list[InputImage] = []
        for path in paths:
            item = read_image(Path(path))
            if isinstance(item, Failure):
                yield item
                continue
            batch.append(item)
            if len(batch) == self.batch_size:
                yield from self._run_safely(batch)
                batch = []
        if batch:
            yield from self._run_safely(batch)

    def _run_safely(self, batch: list[InputImage]) -> Iterator[ImageDetections | Failure]:
        try:
            results = self.predict_images(batch)
        except (RuntimeError, ValueError) as exc:
            logger.debug("batch failed", exc_info=True)
            results = [Failure(image.path, f"inference failed ({first_line(exc)})") for image in batch]
        yield from results

    def predict_images(self, images: Sequence[InputImage]) -> list[ImageDetections]:
        """Detections of already-read images (one runtime call)."""
        pixels, mask, orig_sizes = prepare_inputs([im.pixels for im in images], self.spec)
        scores, labels, boxes = to_detections(self.runtime(pixels, mask, orig_sizes), orig_sizes)
        maps = self._attention(pixels, mask, orig_sizes)
        results = []
        for b, image in enumerate(images):
            keep = select_detections(scores[b], self.threshold, self.top_k)
            found = ImageDetections(image, scores[b, keep], labels[b, keep], boxes[b, keep], keep)
            if maps is not None and keep.numel():
                top = keep[: self.attention_top_k]
                found.attention = crop_to_image(maps[b, top], mask[b], image.size)
            results.append(found)
        return results

    def _attention(self, pixels: Tensor, mask: Tensor, orig_sizes: Tensor) -> Tensor | None:
        if self.attention_runtime is None:
            return None
        if self.attention_runtime is not self.runtime:
            self.attention_runtime(pixels, mask, orig_sizes)
        return self.attention_runtime.last_attention


def prepare_inputs(pixels: Sequence[Tensor], spec: InputSpec) -> tuple[Tensor, Tensor, Tensor]:
    """uint8 [3, H, W] images -> (images [B, 3, H, W] float32, mask [B, H, W] bool, orig_sizes [B, 2])."""
    return prepare(list(pixels), canvas=spec.canvas, size=spec.size, max_size=spec.max_size,
                   batch_size=spec.batch, mean=spec.mean, std=spec.std, min_canvas=spec.min_canvas)
