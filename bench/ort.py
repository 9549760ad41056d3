"""ONNX Runtime sessions for the benchmark: session options (graph optimisation, threads) and, on CUDA,
a runner that binds torch CUDA tensors to the session with IOBinding (no host round trip)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

OPT_LEVELS = ("disable", "basic", "extended", "all")

_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16,
                 "tensor(int64)": np.int64}
_TORCH_DTYPES = {np.float32: torch.float32, np.bool_: torch.bool, np.float16: torch.float16,
                 np.int64: torch.int64}


def session_options(*, threads: int | None = None, opt_level: str = "all"):
    """``onnxruntime.SessionOptions`` with a graph optimisation level and intra-op thread count."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if opt_level not in levels:
        raise ValueError(f"unknown ORT optimisation level {opt_level!r}; choose from {', '.join(OPT_LEVELS)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[opt_level]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # ORT's intra-op threads spin after each run by default; in the round-robin that steals the cores from
    # whichever row runs next (the torch-export row, right after the ONNX rows, measured ~20x slow).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def cpu_runner(session) -> Callable[[Tensor, Tensor], tuple[Tensor, ...]]:
    """``(images, mask) -> (logits, boxes[, masks])`` through numpy on the host."""
    names = [i.name for i in session.get_inputs()]

    def run(images: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        feed = {names[0]: images.detach().cpu().numpy(), names[1]: mask.detach().cpu().numpy()}
        return tuple(torch.from_numpy(out) for out in session.run(None, feed)[:3])

    return run


def _bind(binding, name: str, tensor: Tensor, ort_type: str, output: bool = False) -> None:
    dtype = _NUMPY_DTYPES[ort_type]
    bind = binding.bind_output if output else binding.bind_input
    bind(name, "cuda", tensor.device.index or 0, dtype, list(tensor.shape), tensor.data_ptr())


def iobinding_runner(session, device: str = "cuda") -> Callable[[Tensor, Tensor], tuple[Tensor, ...]]:
    """``(images, mask) -> (logits, boxes[, masks])`` with inputs and outputs bound in CUDA memory."""
    inputs, outputs = session.get_inputs(), session.get_outputs()[:3]
    out_specs = [(o.name, o.type, [int(d) for d in o.shape]) for o in outputs]
    binding = session.io_binding()

    def run(images: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        images = images.to(device, torch.float32).contiguous()
        mask = mask.to(device, torch.bool).contiguous()
        _bind(binding, inputs[0].name, images, inputs[0].type)
        _bind(binding, inputs[1].name, mask, inputs[1].type)
        results = []
        for name, ort_type, shape in out_specs:
            out = torch.empty(shape, dtype=_TORCH_DTYPES[_NUMPY_DTYPES[ort_type]], device=device)
            _bind(binding, name, out, ort_type, output=True)
            results.append(out)
        binding.synchronize_inputs()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return tuple(results)

    return run
