"""One callable interface over every artifact: ``runtime(images, mask[, orig_sizes]) -> dict``.

Inputs are checked against the static shapes and dtypes in the artifact's metadata (a dynamic artifact:
ranks, dtypes, one batch/height/width across inputs, the symbolic ranges) before the format's own
runtime sees them, so a wrong input is one clear :class:`InputError` line, not a backend trace.
Outputs come back as CPU tensors named as in the metadata (``pred_logits``, ``pred_boxes`` or
``scores``, ``labels``, ``boxes``; a segmentation artifact, ``metadata.masks``, adds ``pred_masks`` or
``mask_probs`` [B, Q, H/s, W/s], s = ``metadata.mask_stride``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from exporters.backend import Backend
from exporters.formats import format_for_path, get_format
from exporters.metadata import ArtifactMetadata, MetadataError
from exporters.prepare import prepare_for

_DTYPES = {"images": torch.float32, "mask": torch.bool, "orig_sizes": torch.int64}


class InputError(ValueError):
    """An input of the wrong shape or dtype for an artifact."""


def expected_shapes(meta: ArtifactMetadata) -> dict[str, tuple[int, ...]]:
    """Static shape of each input the artifact takes."""
    b, (h, w) = meta.batch_size, meta.input_size
    shapes = {"images": (b, 3, h, w), "mask": (b, h, w), "orig_sizes": (b, 2)}
    return {name: shapes[name] for name in meta.input_names}


def check_inputs(meta: ArtifactMetadata, inputs: dict[str, Tensor]) -> None:
    """:class:`InputError` (one line) unless every input has its static shape and dtype (a dynamic
    artifact: its rank and dtype, one batch/height/width across inputs, within the symbolic ranges)."""
    if meta.dynamic:
        return check_dynamic_inputs(meta, inputs)
    for name, shape in expected_shapes(meta).items():
        tensor = inputs.get(name)
        if tensor is None:
            raise InputError(f"{meta.format} artifact needs input {name!r} {_DTYPES[name]} {list(shape)}")
        if tuple(tensor.shape) != shape or tensor.dtype != _DTYPES[name]:
            raise InputError(f"input {name!r}: expected {str(_DTYPES[name]).removeprefix('torch.')} "
                             f"{list(shape)}, got {str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)} "
                             f"(the {meta.format} artifact has a static batch {meta.batch_size} and canvas "
                             f"{meta.input_size[0]}x{meta.input_size[1]}; see exporters.prepare)")


_DYNAMIC_DIMS = {"images": ("batch", 3, "height", "width"), "mask": ("batch", "height", "width"),
                 "orig_sizes": ("batch", 2)}


def check_dynamic_inputs(meta: ArtifactMetadata, inputs: dict[str, Tensor]) -> None:
    """Rank, dtype and fixed dimensions of each input; batch, height and width equal across inputs and
    within ``meta.dynamic_limits``."""
    seen: dict[str, tuple[str, int]] = {}
    for name in meta.input_names:
        dims, tensor = _DYNAMIC_DIMS[name], inputs.get(name)
        contract = f"{str(_DTYPES[name]).removeprefix('torch.')} [{', '.join(map(str, dims))}]"
        if tensor is None:
            raise InputError(f"{meta.format} artifact needs input {name!r} {contract}")
        got = f"{str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"
        if tensor.dim() != len(dims) or tensor.dtype != _DTYPES[name] or \
                any(isinstance(d, int) and d != n for d, n in zip(dims, tensor.shape, strict=True)):
            raise InputError(f"input {name!r}: expected {contract}, got {got} (dynamic {meta.format} artifact)")
        for dim, size in zip(dims, tensor.shape, strict=True):
            if isinstance(dim, str):
                _check_dim(meta, name, dim, int(size), seen)


def _check_dim(meta: ArtifactMetadata, name: str, dim: str, size: int, seen: dict[str, tuple[str, int]]) -> None:
    first = seen.setdefault(dim, (name, size))
    if first[1] != size:
        raise InputError(f"input {name!r}: {dim} {size} disagrees with {first[0]!r} ({dim} {first[1]})")
    low, high = meta.dynamic_limits.get(dim, (1, 1 << 31))
    if not low <= size <= high:
        raise InputError(f"input {name!r}: {dim} {size} is outside the range {low}..{high} of this dynamic "
                         f"{meta.format} artifact (see exporters.prepare)")


def _as_tensor(value: Any) -> Tensor | None:
    if value is None or isinstance(value, Tensor):
        return value
    return torch.from_numpy(np.asarray(value))


class Runtime:
    """A loaded artifact (or an eager wrapper) behind the common call signature."""

    def __init__(self, backend: Backend, metadata: ArtifactMetadata, *, path: Path | None = None) -> None:
        self.backend = backend
        self.metadata = metadata
        self.path = path

    @property
    def format(self) -> str:
        return self.metadata.format

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.metadata.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.metadata.output_names

    def __call__(self, images: Any, mask: Any, orig_sizes: Any = None) -> dict[str, Tensor]:
        """``images`` float32 [B,3,H,W], ``mask`` bool [B,H,W], ``orig_sizes`` int64 [B,2] (used only by
        artifacts with post-processing) -> dict of CPU tensors named by ``output_names``."""
        given = {"images": _as_tensor(images), "mask": _as_tensor(mask), "orig_sizes": _as_tensor(orig_sizes)}
        inputs = {name: given[name] for name in self.input_names}
        check_inputs(self.metadata, inputs)
        device = self.backend.device
        outputs = self.backend.run([inputs[name].to(device) for name in self.input_names])
        return {name: out.detach().cpu() for name, out in zip(self.output_names, outputs, strict=True)}

    def prepare(self, images: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`exporters.prepare.prepare_for` this artifact (canvas, rule, static batch)."""
        return prepare_for(self.metadata, images)


def load_runtime(path: str | Path, *, format: str | None = None, device: str = "cpu",
                 **runtime_options: Any) -> Runtime:
    """Load an artifact (format from its suffix unless named) with its metadata.

    ``runtime_options`` go to the format's loader (ONNX: ``providers``, ``session_options``). The file is
    read once; its content hash is verified and a ``.pt2`` passes the safety gate before it is loaded.
    Any unusable file (not found, damaged, modified, unsafe, not a detrtool artifact) raises one line:
    ``FileNotFoundError``, :class:`~exporters.artifact_file.ArtifactError` or ``MetadataError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such artifact file")
    fmt = get_format(format) if format else format_for_path(path)
    backend = fmt.loader(path, device=device, **runtime_options)
    if backend.metadata is None:
        raise MetadataError(f"{path}: no detrtool metadata in the artifact (was it exported by detrtool?)")
    return Runtime(backend, backend.metadata, path=path)


def eager_runtime(wrapper: nn.Module, metadata: ArtifactMetadata, *, device: str = "cpu") -> Runtime:
    """The export wrapper run eagerly behind the same interface (the reference of validation)."""
    wrapper = wrapper.eval().to(device)

    def run(inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        with torch.inference_mode():
            return list(wrapper(*inputs))

    return Runtime(Backend(run=run, native=wrapper, device=device), metadata)
