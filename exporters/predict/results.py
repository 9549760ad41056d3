"""What ``detrtool predict`` writes about its detections: file names, summary lines, COCO results JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_util
from torch import Tensor

from detr_core.errors import printable
from exporters.predict.drawing import label_text
from exporters.predict.run import ImageDetections


class OutputNames:
    """Every file ``detrtool predict`` will write for ``sources``, planned before anything is written:
    ``ROOT/<stem>.png`` per input image and, per ``derived`` suffix, ``ROOT/<stem><suffix>.png`` (the
    attention grid ``_attention``, the panoptic picture ``_panoptic``) and, with ``folders``, ``ROOT/<folder>/
    <stem>.png``. Stems are unique over all of these names, case-insensitively (``<stem>_2`` on a clash), so
    no input's output replaces another's (``a_attention.png``'s picture is not ``a.png``'s attention map);
    a stem too long for a 255-byte file name is shortened (its start and a hash of the name)."""

    def __init__(self, root: Path, sources: Sequence[Path] = (), *, derived: Sequence[str] = (),
                 folders: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.derived = tuple(derived)
        self.folders = tuple(folders)
        self._given: dict[Path, Path] = {}
        self._taken: set[str] = set()
        for source in sources:
            self.picture(source)

    def picture(self, source: Path) -> Path:
        if source not in self._given:
            tail = max((len(d.encode()) for d in self.derived), default=0) + len(".png")
            stem, n = _fit(source.stem, tail), 1
            while any(name in self._taken for name in self._names(stem)):
                n += 1
                stem = _fit(f"{source.stem}_{n}", tail)
            self._taken.update(self._names(stem))
            self._given[source] = self.root / f"{stem}.png"
        return self._given[source]

    def _names(self, stem: str) -> list[str]:
        return [f"{stem}{d}.png".lower() for d in ("", *self.derived)]

    def files(self) -> list[Path]:
        """Every file planned, for every source given so far (pictures, derived pictures, folder PNGs)."""
        planned = []
        for picture in self._given.values():
            planned.append(picture)
            planned += [picture.with_name(f"{picture.stem}{d}.png") for d in self.derived]
            planned += [self.root / folder / picture.name for folder in self.folders]
        return planned


def _fit(stem: str, tail: int, limit: int = 255) -> str:
    """``stem`` when ``stem`` + a ``tail``-byte ending fits a file name, else its start and a hash of it."""
    room = limit - tail
    raw = stem.encode(errors="surrogateescape")
    if len(raw) <= room:
        return stem
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return f"{raw[:room - len(digest) - 1].decode(errors='ignore')}~{digest}"


def summary_line(found: ImageDetections, class_names: Sequence[str], picture: Path | None = None) -> str:
    """``path (HxW): 3 detections: circle 0.98, star 0.91, ... -> picture``, control characters escaped (a class
    name or a file name with a terminal escape or a newline must not recolour the terminal or forge a line)."""
    h, w = found.image.size
    items = [label_text(int(lab), float(s), class_names) for lab, s in zip(found.labels, found.scores, strict=True)]
    shown = ", ".join(items[:5]) + (f", ... (+{len(items) - 5})" if len(items) > 5 else "")
    text = f"{found.image.path} ({h}x{w}): {len(items)} detection{'s' if len(items) != 1 else ''}"
    text += f": {shown}" if items else ""
    return printable(text + (f" -> {picture}" if picture is not None else ""))


def image_ids(found: Sequence[ImageDetections]) -> list[int]:
    """COCO image ids: the file stems when all are distinct integers of ASCII digits within int64
    (``000000000042.png`` -> 42), else 1..N (``².png`` passed ``isdigit`` and then failed ``int()``)."""
    stems = [f.image.path.stem for f in found]
    if all(s.isascii() and s.isdigit() and len(s) <= 18 for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(found) + 1))


def coco_results(found: Sequence[ImageDetections]) -> list[dict[str, Any]]:
    """COCO results format: ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] pixels, ``score``, plus
    ``file_name`` so results of arbitrary images can be traced back; with masks, ``segmentation`` (COCO
    RLE, ``{"size": [h, w], "counts": str}``), so the file also serves as COCO segm results."""
    results = []
    for image_id, item in zip(image_ids(found), found, strict=True):
        rles = encode_masks(item.masks) if item.masks is not None else [None] * len(item)
        for score, label, box, rle in zip(item.scores.tolist(), item.labels.tolist(), item.boxes.tolist(), rles, strict=True):
            x0, y0, x1, y1 = box
            result = {"image_id": image_id, "category_id": int(label),
                      "bbox": [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                      "score": round(float(score), 5), "file_name": str(item.image.path)}
            results.append(result if rle is None else {**result, "segmentation": rle})
    return results


def encode_masks(masks: Tensor) -> list[dict[str, Any]]:
    """``masks`` [N, H, W] bool -> N COCO RLEs (``pycocotools.mask.encode``, counts as str for JSON)."""
    if masks.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]
