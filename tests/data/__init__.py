"""Tests of detr_core.data, and helpers building tiny COCO / VOC datasets on disk."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its relative path (byte-identical trees compare equal)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_image(path: Path, h: int, w: int, *, mode: str = "RGB", fmt: str = "PNG", value: int = 90) -> Path:
    """A flat image of (h, w) in ``mode`` (written with PIL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.full((h, w, 3), value, dtype=np.uint8)).convert(mode).save(path, format=fmt)
    return path


def write_coco(root: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
               categories: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """Write ``root/images/<file_name>`` (flat RGB PNGs of each entry's size) and ``root/ann.json``."""
    for info in images:
        write_image(root / "images" / info["file_name"], info["height"], info["width"])
    categories = categories or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "fox"}]
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root / "images", ann


VOC_XML = """<annotation>
  <folder>VOC2007</folder><filename>{stem}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""

VOC_OBJECT = """<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>
  <difficult>{difficult}</difficult>
  <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"""

#: stem -> (h, w, [(name, difficult, xmin, ymin, xmax, ymax), ...])
VOC_SAMPLES: dict[str, tuple[int, int, list[tuple]]] = {
    "000005": (50, 80, [("chair", 0, 1, 1, 20, 30), ("person", 1, 30, 10, 80, 50)]),
    "000007": (60, 40, [("car", 0, 5, 6, 35, 55)]),
    "000009": (40, 40, [("dog", 0, 10, 10, 20, 20), ("tvmonitor", 1, 2, 3, 4, 5)]),
}


def write_voc(root: Path, samples: dict[str, tuple] | None = None, *, year: str = "2007") -> Path:
    """A tiny ``root/VOCdevkit/VOC{year}`` with XML annotations, JPEGs and train/val/trainval splits."""
    samples = samples or VOC_SAMPLES
    voc = root / "VOCdevkit" / f"VOC{year}"
    for stem, (h, w, objs) in samples.items():
        objects = "".join(VOC_OBJECT.format(name=n, difficult=d, xmin=a, ymin=b, xmax=c, ymax=e)
                          for n, d, a, b, c, e in objs)
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{stem}.xml").write_text(VOC_XML.format(stem=stem, h=h, w=w, objects=objects))
        write_image(voc / "JPEGImages" / f"{stem}.jpg", h, w, fmt="JPEG")
    stems = sorted(samples)
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    (main / "train.txt").write_text("\n".join(stems[:2]) + "\n")
    (main / "val.txt").write_text("\n".join(stems[2:]) + "\n")
    (main / "trainval.txt").write_text("\n".join(stems) + "\n")
    return root / "VOCdevkit"


def write_png_bomb(path: Path, *, width: int = 20000, height: int = 20000) -> Path:
    """A valid 1-bit black PNG of ``width`` x ``height`` (20000x20000 = 400 M pixels) that is tiny on disk
    (~50 KB): a decompression bomb. Written by hand (PIL would need the full image in memory)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
