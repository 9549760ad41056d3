"""Decoded images kept in memory, for small datasets that are read many times (the shapes default).

Decoding a PNG/JPEG is a fixed cost paid every epoch; with ``enabled`` the first read of a file decodes
it (with the dataset's own loader: RGB, EXIF orientation applied) and keeps the result as a uint8
[3, H, W] tensor, about H*W*3 bytes per image. Each DataLoader worker process holds its own cache,
so the saving comes with ``num_workers`` 0 (as in the shapes default); with workers it is rebuilt every
epoch. Later reads return the kept tensor: transforms must not modify their input in place (torchvision's
v2 transforms do not).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor


class ImageCache:
    """``load(path) -> uint8 [3, H, W]``: ``decode(path)`` once when ``enabled``, every time otherwise."""

    def __init__(self, decode: Callable[[Path], Tensor], *, enabled: bool = False) -> None:
        self.decode = decode
        self.enabled = enabled
        self._images: dict[Path, Tensor] = {}

    def __len__(self) -> int:
        return len(self._images)

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept images."""
        return sum(t.numel() * t.element_size() for t in self._images.values())

    def load(self, path: Path) -> Tensor:
        kept = self._images.get(path)
        if kept is not None:
            return kept
        image = self.decode(path)
        if self.enabled:
            self._images[path] = image
        return image
