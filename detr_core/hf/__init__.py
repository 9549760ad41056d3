"""Hugging Face DETR interop without transformers: ``DetrForObjectDetection`` and ``DetrForSegmentation``
folders and ``.safetensors`` files in and out, mapped exactly (bit-identical tensors) to the official DETR
layout detrtool builds (the panoptic one, mask head included, for ``DetrForSegmentation``).

Only ``json`` and the ``safetensors`` library are used here; transformers is a test dependency, never a
runtime one. See :mod:`detr_core.hf.keys` (state-dict names), :mod:`detr_core.hf.config` (config.json) and
:mod:`detr_core.hf.files` (reading and writing).
"""

from __future__ import annotations

from detr_core.lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use: importing a submodule stays light).
_EXPORTS = {
    "hf_to_model_config": "detr_core.hf.config",
    "model_config_to_hf": "detr_core.hf.config",
    "check_safetensors_target": "detr_core.hf.files",
    "is_hf_source": "detr_core.hf.files",
    "read_hf_checkpoint": "detr_core.hf.files",
    "write_hf_folder": "detr_core.hf.files",
    "write_official": "detr_core.hf.files",
    "write_safetensors": "detr_core.hf.files",
    "hf_to_official": "detr_core.hf.keys",
    "official_to_hf": "detr_core.hf.keys",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
