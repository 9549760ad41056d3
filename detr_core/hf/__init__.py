"""Hugging Face DETR interop without transformers: ``DetrForObjectDetection`` and ``DetrForSegmentation``
folders and ``.safetensors`` files in and out, mapped exactly (bit-identical tensors) to the official DETR
layout detrtool builds (the panoptic one, mask head included, for ``DetrForSegmentation``).

Only ``json`` and the ``safetensors`` library are used here; transformers is a test dependency, never a
runtime one. See :mod:`detr_core.hf.keys` (state-dict names), :mod:`detr_core.hf.config` (config.json) and
:mod:`detr_core.hf.files` (reading and writing).
"""

from detr_core.hf.config import hf_to_model_config, model_config_to_hf
from detr_core.hf.files import (
    check_safetensors_target,
    is_hf_source,
    read_hf_checkpoint,
    write_hf_folder,
    write_official,
    write_safetensors,
)
from detr_core.hf.keys import hf_to_official, official_to_hf

__all__ = [
    "check_safetensors_target", "hf_to_model_config", "hf_to_official", "is_hf_source", "model_config_to_hf",
    "official_to_hf", "read_hf_checkpoint", "write_hf_folder", "write_official", "write_safetensors",
]
