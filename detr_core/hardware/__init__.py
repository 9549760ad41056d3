"""The machine: what the CPU is (:mod:`.cpu`) and which precisions each runtime runs natively on it
(:mod:`.capability`)."""

from detr_core.hardware.capability import Capability, Decision, Probe, detect
from detr_core.hardware.cpu import CpuInfo, read_cpu

__all__ = ["Capability", "CpuInfo", "Decision", "Probe", "detect", "read_cpu"]
