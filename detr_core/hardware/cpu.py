"""What the CPU is, as the operating system reports it: name, vendor, ISA flags and clock.

Read once from ``/proc/cpuinfo`` (Linux, x86 ``flags`` or Arm ``Features``) and the cpufreq folder.
Where the OS does not say (no ``/proc/cpuinfo``: macOS, Windows, a sandbox), ``flags`` is None —
unknown, never guessed — and the decisions of :mod:`detr_core.hardware.capability` fall back to the
runtimes' own answers and to micro-probes.

Library caps count as evidence too: ``ONEDNN_MAX_CPU_ISA`` limits the kernels oneDNN (torch's matmuls
and convolutions) may use, whatever the CPU has, so a cap below AVX512_CORE_BF16 makes bf16 emulated.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")

#: The flags that decide reduced-precision speed, in the order reports list them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "avx_ne_convert",
             "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "asimddp", "i8mm", "bf16", "sve")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as the OS reports it; ``flags`` None where the OS does not say."""

    name: str
    arch: str
    vendor: str | None = None
    family: int | None = None
    flags: frozenset[str] | None = None
    mhz: float | None = None  # the OS clock: cpufreq's maximum, else /proc/cpuinfo's "cpu MHz"
    onednn_cap: str | None = None  # ONEDNN_MAX_CPU_ISA, upper-cased, when set

    @property
    def x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "x86")

    def has(self, *names: str) -> bool | None:
        """Whether any of ``names`` is a flag (None when the flags are unknown)."""
        return None if self.flags is None else any(n in self.flags for n in names)

    def isa_summary(self) -> str:
        """The deciding flags present, space separated ("unknown" when the OS does not say)."""
        if self.flags is None:
            return "unknown"
        present = [f for f in ISA_FLAGS if f in self.flags]
        cap = f" (ONEDNN_MAX_CPU_ISA={self.onednn_cap})" if self.onednn_cap else ""
        return (" ".join(present) or "none of " + "/".join(ISA_FLAGS[:3])) + cap

    def to_dict(self) -> dict:
        return {"name": self.name, "arch": self.arch, "vendor": self.vendor, "family": self.family,
                "flags": self.isa_summary(), "mhz": self.mhz, "onednn_cap": self.onednn_cap}


def _fields(text: str) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as ``key -> value``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def _number(value: str | None, kind=float):
    try:
        return kind(value) if value is not None else None
    except ValueError:
        return None


def _max_mhz(path: Path) -> float | None:
    try:
        khz = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return khz / 1000.0 if 100_000 <= khz <= 20_000_000 else None  # 0.1 .. 20 GHz, else not believed


def read_cpu(cpuinfo: Path = CPUINFO, *, cpufreq: Path = CPUFREQ_MAX,
             environ: Mapping[str, str] | None = None) -> CpuInfo:
    """This machine's :class:`CpuInfo` (``flags`` None where ``cpuinfo`` cannot be read)."""
    environ = os.environ if environ is None else environ
    cap = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA")
    arch = platform.machine() or "unknown"
    try:
        fields = _fields(cpuinfo.read_text(errors="replace"))
    except OSError:
        fields = {}
    flag_text = fields.get("flags", fields.get("features"))
    name = fields.get("model name") or fields.get("hardware") or platform.processor() or arch
    mhz = _max_mhz(cpufreq) or _number(fields.get("cpu mhz"))
    return CpuInfo(name=name, arch=arch, vendor=fields.get("vendor_id"), family=_number(fields.get("cpu family"), int),
                   flags=frozenset(flag_text.split()) if flag_text is not None else None,
                   mhz=mhz if mhz and mhz > 0 else None, onednn_cap=cap.strip().upper() if cap else None)
