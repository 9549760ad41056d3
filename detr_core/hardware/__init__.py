"""The machine: what the CPU is (:mod:`.cpu`) and which precisions each runtime runs natively on it
(:mod:`.capability`)."""

from __future__ import annotations

from detr_core.lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use: importing a submodule stays light).
_EXPORTS = {
    "Capability": "detr_core.hardware.capability",
    "Decision": "detr_core.hardware.capability",
    "Probe": "detr_core.hardware.capability",
    "detect": "detr_core.hardware.capability",
    "CpuInfo": "detr_core.hardware.cpu",
    "read_cpu": "detr_core.hardware.cpu",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
