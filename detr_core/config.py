"""Frozen configuration dataclasses: the model, the loss and the training run.

Config objects live at the edges (CLI, builders, checkpoints). Everything below the builders takes
explicit keyword arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from detr_core.errors import printable
from detr_core.input_files import NOT_REGULAR, NotRegularFileError, read_regular_text

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, refusing unknown keys with one clear error."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**data)  # type: ignore[call-arg]


def check_section_keys(settings: dict[str, Any], sections: dict[str, type], *, source: str) -> None:
    """A ``ValueError`` naming ``source`` (the YAML file) and the section when a mapping section of
    ``settings`` (e.g. ``model:``) holds a key its dataclass (``sections[name]``) does not know."""
    for name, cls in sections.items():
        values = settings.get(name)
        if not isinstance(values, dict):
            continue
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known, key=str)
        if unknown:
            raise ValueError(f"{source}: section {name!r}: unknown keys {unknown}; known keys are {sorted(known)}")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (tuples become lists, so it is YAML/JSON friendly)."""
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a DETR model; every field maps to a keyword of the model builders."""

    backbone: str = "resnet50"
    dilation: bool = False
    position_embedding: str = "sine"  # "sine" or "learned"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_queries: int = 100
    num_classes: int = 91
    pre_norm: bool = False
    aux_loss: bool = True
    masks: bool = False  # True: the panoptic model (DETRsegm, a mask head on the detector)
    class_names: tuple[str, ...] = ()
    stuff_classes: tuple[int, ...] = ()  # class ids that are "stuff" in panoptic output; every other id is a thing

    def is_thing(self) -> dict[int, bool]:
        """Class id -> True for things, False for :attr:`stuff_classes` (the panoptic post-processing's map)."""
        stuff = set(self.stuff_classes)
        return {c: c not in stuff for c in range(self.num_classes + 1)}

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """From a stored config (a checkpoint's, a detrtool ``config.json``): every value of its JSON type
        (``"dilation": "false"`` is refused, not read as True); class names with control characters escaped
        (they reach the terminal)."""
        data = dict(data)
        for key in ("class_names", "stuff_classes"):
            if key in data and data[key] is not None:
                if not isinstance(data[key], list | tuple):
                    raise ValueError(f"{key} must be a list, got {data[key]!r:.40}")
                data[key] = tuple(data[key])
        _check_field_types(cls, data)
        if data.get("class_names") is not None:
            data["class_names"] = tuple(printable(n) for n in data["class_names"])
        return from_dict(cls, data)


_FIELD_TYPES: dict[str, Any] = {
    "bool": lambda v: isinstance(v, bool), "int": lambda v: type(v) is int,
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool), "str": lambda v: isinstance(v, str),
    "tuple[str, ...]": lambda v: all(isinstance(i, str) for i in v),
    "tuple[int, ...]": lambda v: all(type(i) is int for i in v),
}
_TYPE_WORDS = {"bool": "a JSON boolean (true or false)", "int": "an integer", "float": "a number", "str": "a string",
               "tuple[str, ...]": "a list of strings", "tuple[int, ...]": "a list of integers"}


def _check_field_types(cls: type, data: dict[str, Any]) -> None:
    """``ValueError`` naming the first field of ``data`` whose value is not of the dataclass field's type."""
    for f in fields(cls):
        kind = str(f.type)
        value = data.get(f.name)
        if value is not None and kind in _FIELD_TYPES and not _FIELD_TYPES[kind](value):
            raise ValueError(f"{f.name} must be {_TYPE_WORDS[kind]}, got {value!r:.40}")


@dataclass(frozen=True)
class LossConfig:
    """Hungarian matcher costs and set-criterion weights (the reference defaults)."""

    set_cost_class: float = 1.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    ce_loss_coef: float = 1.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    eos_coef: float = 0.1
    mask_loss_coef: float = 1.0  # sigmoid focal loss of matched masks (segmentation models only)
    dice_loss_coef: float = 1.0  # dice loss of matched masks (segmentation models only)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossConfig:
        return from_dict(cls, data)


class YamlRefused(yaml.YAMLError):
    """A YAML construct :class:`StrictLoader` refuses; the message is one line without the file name."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags: nothing in the file runs) that also refuses

    - a key given twice in one mapping (SafeLoader keeps the last one silently), naming the key and lines;
    - anchors and aliases (``&a`` / ``*a``, and so ``<<:`` merges): a config file needs none, and an alias
      bomb (``*a8`` of 10^9 elements) would otherwise expand for minutes. Refused while composing, before
      anything is expanded.

    Every YAML file detrtool reads (``--config``, a YOLO ``data.yaml``) goes through :func:`strict_yaml_load`.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            sign = "*" if kind == "alias" else "&"
            raise YamlRefused(f"line {event.start_mark.line + 1}: {kind} {sign}{event.anchor} refused (anchors, "
                              "aliases and merge keys are not accepted in detrtool's YAML files)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and first.setdefault(key, line) != line:
                raise YamlRefused(f"line {line}: key {key!r} given twice in one mapping (first on line {first[key]})")
        return super().construct_mapping(node, deep=deep)


def strict_yaml_load(text: str) -> Any:
    """``text`` parsed by :class:`StrictLoader`; :class:`YamlRefused` / ``yaml.YAMLError`` on bad input."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: Path, *, error: type[Exception] = ValueError, what: str = "YAML file") -> Any:
    """``path`` parsed by :func:`strict_yaml_load`; any problem is one ``error`` line naming the file."""
    try:
        return strict_yaml_load(read_regular_text(path))
    except YamlRefused as exc:
        raise error(f"{path}: {exc}") from None
    except NotRegularFileError:
        raise error(f"{path}: {NOT_REGULAR}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise error(f"{path}: not a readable {what} ({' '.join(str(exc).split())})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict with one clear error on bad input (a repeated key, an anchor or
    an alias: :class:`StrictLoader`)."""
    path = Path(path)
    data = read_yaml_file(path, what="YAML config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data
