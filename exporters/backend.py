"""What a format's loader returns: a backend maps the wrapper's input tensors to its output tensors.

``Backend(inputs: list[Tensor] in input-name order) -> list[Tensor] in output-name order``; it does no
checking (that is :mod:`exporters.runtime`'s job) and owns the format's session object (``native``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Backend:
    """A loaded artifact: ``run`` computes, ``native`` is the format's own object (ScriptModule,
    ``onnxruntime.InferenceSession``, ``ExportedProgram`` module), ``device`` where inputs must live,
    ``metadata`` the detrtool metadata read from the very bytes that were loaded (None when absent)."""

    run: Callable[[Sequence[Tensor]], Sequence[Tensor]]
    native: Any
    device: str = "cpu"
    metadata: Any = None


def module_backend(module: Callable[..., Sequence[Tensor]], *, device: str = "cpu", metadata: Any = None) -> Backend:
    """A backend for a callable torch module (TorchScript, torch.export): runs under inference mode."""

    def run(inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        with torch.inference_mode():
            return list(module(*inputs))

    return Backend(run=run, native=module, device=device, metadata=metadata)
