"""Detections on users' images from any runtime: read, prepare, run in batches, post-process.

The same :func:`exporters.prepare.prepare` as export and bench turns images into ``(images, mask,
orig_sizes)`` (eval resize rule capped to the canvas, normalisation, padding, live mask); the runtime is
anything that maps ``(images, mask)`` to DETR's raw outputs (``pred_logits``, ``pred_boxes``) or to
post-processed ``scores``/``labels``/``boxes`` (artifacts exported ``--with-postprocess``). Detections
come back in the pixels of each original (upright) image.

A segmentation model adds ``pred_masks`` [B, Q, h, w] mask logits (or, post-processed, ``mask_probs``
= their sigmoid) at stride s of the padded canvas. Each detection's mask is upsampled (bilinear) to the
canvas, cropped to its image's own region, thresholded and resized (nearest) to the original size, so
an image gets the same masks in a padded batch as alone; the panoptic map goes the same crop path
(``panoptic_predictions(..., input_sizes=canvas)``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from detr_core.cross_attention import capture_cross_attention, crop_to_image
from detr_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from detr_core.errors import first_line
from detr_core.postprocess import postprocess_tensors
from detr_core.segmentation.panoptic_format import one_based
from detr_core.segmentation.postprocess import image_masks, panoptic_predictions
from exporters.image_inputs import Failure, InputImage, read_image
from exporters.prepare import prepare

logger = logging.getLogger(__name__)

#: What predict runs: ``(images, mask, orig_sizes) -> outputs``, an :class:`exporters.runtime.Runtime` or an
#: :class:`EagerRuntime`.
RuntimeFn = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


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


@dataclass(frozen=True)
class PanopticImage:
    """One image's panoptic map: ``segment_ids`` [H, W] int64 at the original size and ``segments_info``
    ``[{id, isthing, category_id, area}]``, ids 1..K (0: void, COCO's convention; :func:`one_based` of
    :func:`detr_core.segmentation.panoptic_predictions`'s)."""

    segment_ids: Tensor
    segments_info: list[dict]


@dataclass
class ImageDetections:
    """One image's detections, best first: ``boxes`` [N, 4] x0, y0, x1, y1 in original pixels,
    ``scores`` [N], ``labels`` [N] int64, ``queries`` [N] (decoder query of each), ``attention``
    [N, H, W] over the image when asked for; a segmentation model adds ``masks`` [N, H, W] bool (original
    pixels) and, when asked for, ``panoptic``."""

    image: InputImage
    scores: Tensor
    labels: Tensor
    boxes: Tensor
    queries: Tensor
    attention: Tensor | None = None
    masks: Tensor | None = None
    panoptic: PanopticImage | None = None

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
        keys = ("pred_logits", "pred_boxes", "pred_masks")
        return {key: out[key].cpu() for key in keys if key in out}


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
    ``mask_threshold``: the mask probability a pixel needs (segmentation models); ``panoptic_threshold``:
    also build each image's panoptic map (queries of score above it; ``is_thing`` class id -> bool).
    """

    runtime: RuntimeFn
    spec: InputSpec
    threshold: float = 0.7
    batch_size: int = 1
    top_k: int | None = None
    attention_runtime: EagerRuntime | None = None
    attention_top_k: int = 6
    class_names: tuple[str, ...] = field(default=())
    mask_threshold: float = 0.5
    panoptic_threshold: float | None = None
    is_thing: Mapping[int, bool] = field(default_factory=dict)

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
        outputs = self.runtime(pixels, mask, orig_sizes)
        scores, labels, boxes = to_detections(outputs, orig_sizes)
        maps = self._attention(pixels, mask, orig_sizes)
        sizes, canvas = valid_sizes(mask), (int(mask.shape[-2]), int(mask.shape[-1]))
        panoptic = self._panoptic(outputs, sizes, orig_sizes, canvas, len(images))
        results = []
        for b, image in enumerate(images):
            keep = select_detections(scores[b], self.threshold, self.top_k)
            found = ImageDetections(image, scores[b, keep], labels[b, keep], boxes[b, keep], keep)
            found.masks = self._masks(outputs, b, keep, sizes[b], canvas, image.size)
            found.panoptic = panoptic[b] if panoptic is not None else None
            if maps is not None and keep.numel():
                top = keep[: self.attention_top_k]
                found.attention = crop_to_image(maps[b, top], mask[b], image.size)
            results.append(found)
        return results

    def _masks(self, outputs: dict[str, Tensor], b: int, keep: Tensor, size: Tensor, canvas: tuple[int, int],
               orig_size: tuple[int, int]) -> Tensor | None:
        """[N, H, W] bool masks of image ``b``'s kept queries, or None for a detector."""
        masks = mask_logits(outputs)
        if masks is None:
            return None
        return instance_masks(masks[b, keep], (int(size[0]), int(size[1])), canvas, orig_size,
                              threshold=self.mask_threshold)

    def _panoptic(self, outputs: dict[str, Tensor], sizes: Tensor, orig_sizes: Tensor, canvas: tuple[int, int],
                  count: int) -> list[PanopticImage] | None:
        if self.panoptic_threshold is None:
            return None
        masks = mask_logits(outputs)
        if "pred_logits" not in outputs or masks is None:
            raise ValueError("panoptic output needs pred_logits and masks (a segmentation model exported without "
                             "--with-postprocess)")
        raw = {"pred_logits": outputs["pred_logits"][:count].float(), "pred_masks": masks[:count]}
        found = panoptic_predictions(raw, sizes[:count], orig_sizes[:count], is_thing=self.is_thing,
                                     threshold=self.panoptic_threshold,
                                     input_sizes=torch.tensor([canvas] * count))
        return [PanopticImage(**one_based(r)) for r in found]

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


def valid_sizes(mask: Tensor) -> Tensor:
    """``mask`` [B, H, W] (True on padding) -> [B, 2] (h, w) of each image's own region (top-left)."""
    valid = ~mask
    return torch.stack([valid.any(2).sum(1), valid.any(1).sum(1)], dim=1)


def mask_logits(outputs: dict[str, Tensor]) -> Tensor | None:
    """The runtime's mask logits [B, Q, h, w]: ``pred_masks``, or the logit of the post-processed
    ``mask_probs`` (exact but where the sigmoid saturated, far from any threshold); None for a detector."""
    if "pred_masks" in outputs:
        return outputs["pred_masks"].float()
    if "mask_probs" in outputs:
        return torch.logit(outputs["mask_probs"].double(), eps=1e-12).float()
    return None


def instance_masks(masks: Tensor, size: tuple[int, int], canvas: tuple[int, int], orig_size: tuple[int, int], *,
                   threshold: float = 0.5) -> Tensor:
    """One image's ``masks`` [K, h, w] logits over the padded ``canvas`` -> [K, H, W] bool at ``orig_size``:
    bilinear to the canvas, cropped to the image's ``size`` (h, w as fed), sigmoid > ``threshold``, nearest
    to the original size (``PostProcessSegm``'s maths, the padding cropped first)."""
    return image_masks(masks, size, canvas, orig_size, threshold=threshold)[:, 0].bool()
