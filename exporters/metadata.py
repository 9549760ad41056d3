"""Artifact metadata: one schema for every format, stored as string key/values.

ONNX keeps it in ``metadata_props`` (one prop per field, prefixed ``detrtool.``), TorchScript and
torch.export in the archive's extra files (``detrtool.json``). Values are JSON, so they read back with
their types. What a runtime needs to prepare inputs exactly as at export travels here: the static
canvas and batch, the resize rule (``size``, ``max_size``), mean/std and the mask convention.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torch import nn

from detr_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from detr_core.errors import printable

PROP_PREFIX = "detrtool."
EXTRA_FILE = "detrtool.json"
MASK_CONVENTION = "mask: bool [B, H, W], True on padding; images in the top-left corner of the canvas"
RESIZE_RULE = ("eval rule: shorter side `size`, longer side <= `max_size`, then scaled down (aspect kept, "
               "never cropped) to fit the canvas; antialiased bilinear on uint8 RGB, /255, ImageNet mean/std")
SCHEMA_VERSION = 2  # 2: content_sha256 covers the metadata too
HASH_FIELD = "content_sha256"


SEAL_TAG = b"detrtool content+metadata v1\0"


class MetadataError(ValueError):
    """An artifact without readable detrtool metadata."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise MetadataError(f"metadata field {twice!r} appears twice")
    return dict(pairs)


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses a key given twice in any object (where plain JSON keeps the last)."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def props_fields(props: list[tuple[str, str]]) -> dict[str, Any]:
    """The ``detrtool.*`` string props (in file order) as ``{field: value}``; a prop given twice, or a value
    that is not JSON, is a :class:`MetadataError`."""
    keys = [k for k, _ in props if k.startswith(PROP_PREFIX)]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise MetadataError(f"metadata prop {twice} appears twice")
    fields = {}
    for key, value in props:
        if key.startswith(PROP_PREFIX):
            try:
                fields[key[len(PROP_PREFIX):]] = strict_json(value)
            except json.JSONDecodeError as exc:
                raise MetadataError(f"metadata prop {key} is not JSON ({exc.msg})") from None
    return fields


def seal(content_digest: str, fields: dict[str, Any]) -> str:
    """The recorded hash: sha256 over the content digest and the canonical metadata — every field but
    ``content_sha256`` itself, as JSON with sorted keys and no spaces — so that an edit of either is seen."""
    canonical = json.dumps({k: v for k, v in fields.items() if k != HASH_FIELD}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(SEAL_TAG + content_digest.encode("ascii") + b"\0" + canonical.encode("ascii")).hexdigest()


def detrtool_version() -> str:
    try:
        return version("detrtool")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ArtifactMetadata:
    """What an exported artifact is and how to feed it (``input_size`` is the canvas (H, W)).

    ``assumed``: architecture values the checkpoint could not tell and that were assumed at export
    (e.g. ``{"nheads": 8}`` for an official checkpoint exported without ``--nheads``).
    ``content_sha256``: :func:`seal` of the artifact's content (see :mod:`exporters.artifact_file`) and of
    every other metadata field, verified on every load.
    ``dynamic``: batch, height and width are symbolic (``input_size``/``batch_size`` are then the example
    used at export); ``dynamic_limits``: ``{"batch": [min, max], "height": [...], "width": [...]}``.
    ``masks``: a segmentation model (one more output, ``pred_masks`` or ``mask_probs`` [B, Q, H/s, W/s]);
    ``mask_stride``: that s (0 for a detector)."""

    format: str
    input_size: tuple[int, int]
    batch_size: int
    size: int
    max_size: int | None
    num_queries: int
    num_classes: int
    class_names: tuple[str, ...] = ()
    with_postprocess: bool = False
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize_rule: str = RESIZE_RULE
    mask_convention: str = MASK_CONVENTION
    format_options: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    assumed: dict[str, Any] = field(default_factory=dict)
    content_sha256: str = ""
    dynamic: bool = False
    dynamic_limits: dict[str, list[int]] = field(default_factory=dict)
    masks: bool = False
    mask_stride: int = 0
    detrtool_version: str = field(default_factory=detrtool_version)
    torch_version: str = torch.__version__
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactMetadata:
        if not isinstance(data, dict):
            raise MetadataError(f"artifact metadata is a {type(data).__name__}, not a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and
                   f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise MetadataError(f"artifact metadata lacks {missing}")
        kept = {k: v for k, v in data.items() if k in known}  # newer fields are ignored, not fatal
        if problem := _range_problem(kept):
            raise MetadataError(f"artifact metadata: {problem}")
        for name in ("input_size", "class_names", "input_names", "output_names", "mean", "std"):
            if name in kept:
                kept[name] = tuple(kept[name])
        if "class_names" in kept:  # they reach the terminal: control characters escaped
            kept["class_names"] = tuple(printable(n) for n in kept["class_names"])
        return cls(**kept)

    def sealed(self, content_digest: str) -> ArtifactMetadata:
        """This metadata with ``content_sha256`` recorded for ``content_digest`` and these fields."""
        return dataclasses.replace(self, content_sha256=seal(content_digest, self.to_dict()))

    def to_props(self) -> dict[str, str]:
        """``{"detrtool.<field>": json}``: the string key/values stored in an artifact."""
        return {PROP_PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_props(cls, props: dict[str, str] | list[tuple[str, str]]) -> ArtifactMetadata:
        data = props_fields(list(props.items()) if isinstance(props, dict) else props)
        if not data:
            raise MetadataError("no detrtool metadata in the artifact (was it exported by detrtool?)")
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ArtifactMetadata:
        return cls.from_dict(strict_json(text))


#: What a runtime allocates from the metadata (a canvas of ``batch_size`` x ``input_size``, tables of classes and
#: queries) has a ceiling, checked before any of it is built; a forged or broken field is one line.
_INT_RANGES = {"batch_size": (1, 4096), "num_queries": (1, 65536), "num_classes": (1, 65536), "size": (1, 16384),
               "mask_stride": (0, 64)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range_problem(fields: dict[str, Any]) -> str | None:
    """Why a metadata field is of the wrong type or out of range, or None."""
    for name, (low, high) in _INT_RANGES.items():
        value = fields.get(name)
        if name in fields and not (_is_int(value) and low <= value <= high):
            return f"{name} must be an integer {low}..{high}, got {value!r:.40}"
    max_size = fields.get("max_size")
    if max_size is not None and not (_is_int(max_size) and 1 <= max_size <= 16384):
        return f"max_size must be an integer 1..16384 or null, got {max_size!r:.40}"
    size = fields.get("input_size")
    if "input_size" in fields and not (isinstance(size, list | tuple) and len(size) == 2
                                       and all(_is_int(v) and 1 <= v <= 16384 for v in size)):
        return f"input_size must be [height, width], each 1..16384, got {size!r:.40}"
    names = fields.get("class_names", [])
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        return f"class_names must be a list of strings, got {names!r:.40}"
    for flag in ("with_postprocess", "dynamic", "masks"):
        if flag in fields and not isinstance(fields[flag], bool):
            return f"{flag} must be a JSON boolean, got {fields[flag]!r:.40}"
    return None


def build_metadata(model: nn.Module, *, format: str, input_size: tuple[int, int], batch_size: int,
                   size: int, max_size: int | None, with_postprocess: bool,
                   input_names: tuple[str, ...], output_names: tuple[str, ...],
                   format_options: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None, dynamic: bool = False) -> ArtifactMetadata:
    """Metadata of ``model`` (a ``DETR`` or ``DETRsegm`` with ``.config``) exported with these settings."""
    config = getattr(model, "config", None)
    model_config = dataclasses.asdict(config) if config is not None else {}
    model_config.pop("class_names", None)
    return ArtifactMetadata(
        format=format, input_size=(int(input_size[0]), int(input_size[1])), batch_size=int(batch_size),
        size=int(size), max_size=None if max_size is None else int(max_size),
        num_queries=int(model.num_queries), num_classes=int(model.num_classes),
        class_names=tuple(getattr(config, "class_names", ()) or ()), with_postprocess=with_postprocess,
        input_names=tuple(input_names), output_names=tuple(output_names),
        format_options=dict(format_options or {}), model_config=model_config, extra=dict(extra or {}),
        assumed=dict(getattr(model, "assumed_config", None) or {}),
        dynamic=bool(dynamic), dynamic_limits=dynamic_limits() if dynamic else {},
        masks=hasattr(model, "mask_head"), mask_stride=int(getattr(model, "mask_stride", 0)),
    )


#: Range of each symbolic dimension of a dynamic export: a side below 64 px leaves a ResNet (stride 32) a
#: 1x1 feature map, which torch.export cannot keep symbolic.
DYNAMIC_LIMITS: dict[str, tuple[int, int]] = {"batch": (1, 1024), "height": (64, 4096), "width": (64, 4096)}


def dynamic_limits() -> dict[str, list[int]]:
    return {name: list(bounds) for name, bounds in DYNAMIC_LIMITS.items()}

