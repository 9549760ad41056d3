"""Pictures of detections: boxes with "name 0.93" labels (over semi-transparent instance masks for a
segmentation model), and a grid of decoder cross-attention maps.

Boxes are drawn by ``torchvision.utils.draw_bounding_boxes``: one colour per class (a fixed, well-spread
hue sequence), a dark halo under each box line and a filled label background whose text colour is
chosen by luminance, so that boxes and labels stay readable on dark and light images alike. Line width
and font size scale with the image size. The attention grid is a matplotlib (Agg) figure written to PNG.
"""

from __future__ import annotations

import colorsys
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from detr_core.atomic import atomic_write, make_folder

logger = logging.getLogger(__name__)

_GOLDEN = 0.618033988749895
_HALO = (0, 0, 0)
MASK_ALPHA = 0.45


@functools.lru_cache(maxsize=256)
def class_color(label: int) -> tuple[int, int, int]:
    """A saturated RGB colour for class ``label``: hues spread by the golden ratio, the same every run."""
    r, g, b = colorsys.hsv_to_rgb((0.08 + label * _GOLDEN) % 1.0, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def instance_color(label: int, index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th detection (or segment) of class ``label``: the class hue, shifted a
    little and lighter or darker per instance, so that neighbours of one class stay apart."""
    hue = (0.08 + label * _GOLDEN + 0.045 * (index % 5)) % 1.0
    value = (0.95, 0.7, 0.85, 0.6, 1.0)[index % 5]
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(r * 255), round(g * 255), round(b * 255)


def text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def label_text(label: int, score: float, class_names: Sequence[str] = ()) -> str:
    """``"name 0.93"``; the class id when no name is known."""
    name = class_names[label] if 0 <= label < len(class_names) else str(label)
    return f"{name} {score:.2f}"


def line_width(height: int, width: int) -> int:
    """Box line width in pixels: 2 on small images, about 1/300 of the shorter side on large ones."""
    return max(2, round(min(height, width) / 300))


def font_size(height: int, width: int) -> int:
    """Label font size in pixels: 8 on thumbnails, up to 40 on very large images."""
    return int(min(40, max(8, round(min(height, width) * 0.03))))


@functools.lru_cache(maxsize=1)
def font_path() -> str:
    from matplotlib import font_manager  # matplotlib ships DejaVu Sans, so a TrueType font always exists

    return font_manager.findfont("DejaVu Sans")


def draw_detections(image: Tensor, boxes: Tensor, labels: Tensor, scores: Tensor,
                    class_names: Sequence[str] = (), masks: Tensor | None = None) -> Tensor:
    """Draw boxes (x0, y0, x1, y1 pixels) on ``image`` uint8 [3, H, W], over ``masks`` [N, H, W] bool
    (one semi-transparent colour per detection) when given; returns a new uint8 [3, H, W]."""
    if boxes.numel() == 0:
        return image.clone()
    if masks is not None:
        image = draw_masks(image, masks, labels)
    h, w = int(image.shape[-2]), int(image.shape[-1])
    boxes = _clip(boxes.detach().float().cpu(), h, w)
    colors = [class_color(int(lab)) for lab in labels.tolist()]
    texts = [label_text(int(lab), float(s), class_names) for lab, s in zip(labels.tolist(), scores.tolist(), strict=True)]
    width = line_width(h, w)
    halo = draw_bounding_boxes(image, boxes, colors=_HALO, width=width + 1)
    return draw_bounding_boxes(
        halo, boxes, labels=texts, colors=colors, width=width, font=font_path(), font_size=font_size(h, w),
        fill_labels=True, label_colors=[text_color(c) for c in colors], label_background_colors=colors,
    )


def draw_masks(image: Tensor, masks: Tensor, labels: Tensor, *, alpha: float = MASK_ALPHA) -> Tensor:
    """``masks`` [N, H, W] bool blended over ``image`` uint8 [3, H, W], detection i in
    :func:`instance_color` (its class, i); where masks overlap, the better detection's colour is on top."""
    if masks.shape[0] == 0:
        return image.clone()
    colors = [instance_color(int(lab), i) for i, lab in enumerate(labels.tolist())]
    out = image
    for i in reversed(range(masks.shape[0])):  # the best detection's colour ends on top where masks overlap
        out = draw_segmentation_masks(out, masks[i : i + 1].bool().cpu(), alpha=alpha, colors=[colors[i]])
    return out


def _clip(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clip to the image and make every box at least one pixel wide (draw_bounding_boxes refuses x1 < x0)."""
    x0 = boxes[:, 0].clamp(0, width - 1)
    y0 = boxes[:, 1].clamp(0, height - 1)
    x1 = torch.maximum(boxes[:, 2].clamp(0, width - 1), x0)
    y1 = torch.maximum(boxes[:, 3].clamp(0, height - 1), y0)
    return torch.stack([x0, y0, x1, y1], dim=1)


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a uint8 [3, H, W] tensor as a PNG (parent folders created)."""
    from torchvision.transforms.v2.functional import to_pil_image

    path = Path(path)
    make_folder(path.parent)
    pil = to_pil_image(image)
    atomic_write(path, lambda f: pil.save(f, format="PNG", optimize=True))
    return path


def save_attention_grid(image: Tensor, maps: Tensor, boxes: Tensor, labels: Tensor, scores: Tensor,
                        path: str | Path, class_names: Sequence[str] = (), *, max_cols: int = 4) -> Path:
    """A PNG grid: the image with the detections, then one attention map [H, W] per detection.

    ``maps`` [N, H, W] over the original image (see ``detr_core.cross_attention``), one per box; each map
    panel shows the box outlined in its class colour and the label as title.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg renders the PNG

    panels = 1 + int(maps.shape[0])
    cols = min(max_cols, panels)
    rows = -(-panels // cols)
    h, w = int(image.shape[-2]), int(image.shape[-1])
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows * h / w + 0.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    axes[0][0].imshow(draw_detections(image, boxes, labels, scores, class_names).permute(1, 2, 0).numpy())
    axes[0][0].set_title("detections", fontsize=9)
    for i in range(maps.shape[0]):
        ax = axes[(i + 1) // cols][(i + 1) % cols]
        _attention_panel(ax, maps[i], boxes[i], int(labels[i]), float(scores[i]), class_names)
    for ax in axes.flat:
        ax.axis("off")
    path = Path(path)
    make_folder(path.parent)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    return path


def _attention_panel(ax, attention: Tensor, box: Tensor, label: int, score: float,
                     class_names: Sequence[str]) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(attention.detach().float().cpu().numpy(), cmap="viridis")
    x0, y0, x1, y1 = (float(v) for v in box)
    color = tuple(c / 255 for c in class_color(label))
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))
    ax.set_title(label_text(label, score, class_names), fontsize=9)
