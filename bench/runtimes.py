"""Every way the benchmark runs DETR, behind one protocol: ``runtime(images, mask) -> (logits, boxes)``, and
for a segmentation model ``(logits, boxes, masks)`` (``pred_masks`` [B, Q, H/s, W/s] logits, every row alike).

Rows come from the exporters' format table (``exporters.formats.FORMATS``: one fp32 row per format,
loaded by the format's own loader) plus variant rows that no exporter writes: eager and eager autocast
(bf16 on CPU, fp16 on CUDA), TorchScript frozen + ``optimize_for_inference``, ``torch.compile``
(inductor with freezing, fp32 and bf16/fp16), and ONNX Runtime int8 (static QDQ, dynamic MatMul) and
fp16. ONNX rows run in a session with graph optimisation "all" and the benchmark's thread count; on
CUDA they use the CUDA execution provider with IOBinding. OpenVINO rows (CPU only) run the IR with the
f32 or bf16 precision hint, and NNCF's post-training int8 of it. Whether a row's precision is native on this
CPU is decided before any row is built (:mod:`detr_core.hardware.capability`, ``RowSpec.needs``); a builder
that cannot run raises :class:`RowSkipped` and is reported as skipped. ExecuTorch (``.pte``, XNNPACK) and LiteRT
(``.tflite``) rows run their fp32 artifact and a PT2E int8 of the model (heads fp32) on the CPU; without the
``edge`` extra they are skipped with "pip install detrtool[edge]".

Each row is a :class:`RowSpec` (``family`` is what ``--formats`` selects); ``spec.build(ctx, device)``
gives a :class:`LoadedRuntime`, whose ``setup_seconds`` is load (+ compile or quantise) time.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from bench import ort, quantize
from bench.artifacts import Artifact, ArtifactCache
from exporters.wrapper import wrap

Outputs = tuple[Tensor, ...]  # (pred_logits, pred_boxes[, pred_masks])
AMP_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}
PRECISION_NAME = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class LoadedRuntime:
    """A ready runtime: ``fn`` computes; ``artifact`` is the file it runs (None for eager/compile)."""

    name: str
    format: str
    device: str
    precision: str
    fn: Callable[[Tensor, Tensor], Outputs]
    artifact: Artifact | None = None
    setup_seconds: float = 0.0
    notes: dict[str, float | str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds of set-up: export, quantise, compile, load

    def __call__(self, images: Tensor, mask: Tensor) -> Outputs:
        return self.fn(images, mask)


@dataclass
class BuildContext:
    """What builders need: the eager model (CPU, fp32, eval), the artifact cache, an example input of
    the benchmark's shape, calibration batches for int8 and the thread count. ``phases`` collects the
    seconds the build in progress spends exporting and quantising (through :meth:`export` / :meth:`derive`)."""

    model: nn.Module
    cache: ArtifactCache
    example: tuple[Tensor, Tensor]
    calibration: Callable[[], Iterable[tuple[Tensor, Tensor]]]
    threads: int | None = None
    ort_opt_level: str = "all"
    phases: dict[str, float] = field(default_factory=dict)

    def export(self, fmt: str) -> Artifact:
        """The cached (or newly made) artifact of format ``fmt``; the time counts as ``export``."""
        return self._timed("export", lambda: self.cache.export(fmt))

    def derive(self, source: Artifact, name: str, suffix: str, make: Callable[[Path, Path], None],
               **options) -> Artifact:
        """A cached (or newly made) derived artifact; the time counts as ``quantise``."""
        return self._timed("quantise", lambda: self.cache.derive(source, name, suffix, make, **options))

    def _timed(self, phase: str, fn: Callable[[], Artifact]) -> Artifact:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - start


Builder = Callable[[BuildContext, str], LoadedRuntime]


@dataclass(frozen=True)
class RowSpec:
    """One benchmark row: ``name`` (unique), ``family`` (format name, or eager / compile), precision,
    the devices it runs on, its builder and the runtime whose kernels run it on the CPU (``torch``,
    ``onnxruntime``, ``openvino``: what the capability decision asks about)."""

    name: str
    family: str
    precision: str
    devices: tuple[str, ...]
    builder: Builder
    runtime: str = "torch"

    @property
    def lossy(self) -> bool:
        return self.precision != "fp32"

    def precision_on(self, device: str) -> str:
        return PRECISION_NAME[AMP_DTYPE[device.split(":")[0]]] if self.precision == "amp" else self.precision

    def needs(self, device: str) -> tuple[str, str]:
        """(precision, runtime) this row runs in on ``device``: what must be native for it to mean anything."""
        return self.precision_on(device), "cuda" if device.startswith("cuda") else self.runtime

    def build(self, ctx: BuildContext, device: str) -> LoadedRuntime:
        ctx.phases = {}
        start = time.perf_counter()
        runtime = self.builder(ctx, device)
        runtime.setup_seconds += time.perf_counter() - start
        runtime.name, runtime.precision = self.name, self.precision_on(device)
        runtime.phases = _setup_phases(ctx.phases, runtime)
        return runtime


def _setup_phases(timed: dict[str, float], runtime: LoadedRuntime) -> dict[str, float]:
    """Set-up seconds split into export, quantise, compile and the rest (load)."""
    phases = {k: v for k, v in timed.items() if v > 0}
    if runtime.notes.get("compile_seconds"):
        phases["compile"] = float(runtime.notes["compile_seconds"])
    phases["load"] = max(0.0, runtime.setup_seconds - sum(phases.values()))
    return phases


def _pair(out) -> Outputs:
    """The wrapper's raw outputs: (logits, boxes), plus masks for a segmentation model."""
    return tuple(out[:3])


def _eager_module(ctx: BuildContext, device: str) -> nn.Module:
    return wrap(ctx.model).to(device)


def _inputs_on(device: str) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    return lambda images, mask: (images.to(device), mask.to(device))


def build_eager(ctx: BuildContext, device: str, *, amp: bool = False) -> LoadedRuntime:
    return eager_bench_runtime(ctx.model, device, amp=amp)


def eager_bench_runtime(model: nn.Module, device: str = "cpu", *, amp: bool = False) -> LoadedRuntime:
    """The model itself under ``inference_mode`` (and autocast when ``amp``) as the bench's ``eager`` row
    (:func:`exporters.runtime.eager_runtime` runs an export wrapper behind an artifact's interface)."""
    module, move = wrap(model).to(device), _inputs_on(device)
    autocast = (lambda: torch.autocast(device, dtype=AMP_DTYPE[device])) if amp else contextlib.nullcontext

    def run(images: Tensor, mask: Tensor) -> Outputs:
        with torch.inference_mode(), autocast():
            out = module(*move(images, mask))
        return tuple(t.float() for t in out)

    return LoadedRuntime("eager", "eager", device, "fp32", run)


class _Autocast(nn.Module):
    """``module`` under autocast to ``dtype`` with float32 outputs (compiled as one graph)."""

    def __init__(self, module: nn.Module, device: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.device, self.dtype = module, device, dtype

    def forward(self, images: Tensor, mask: Tensor) -> Outputs:
        with torch.autocast(self.device, dtype=self.dtype):
            out = self.module(images, mask)
        return tuple(t.float() for t in out)


@contextlib.contextmanager
def inductor_cache(root: Path):
    """Inductor's compiled kernels kept in ``root/inductor`` while the block runs, so a rerun of the compile
    rows skips the C++ builds (tiny model: 19.9 s -> 7.7 s). The folder is made private (0700) and used
    only when it is a real folder this user owns that nobody else can write (a cache of code that is
    loaded and run must not be writable by others); torch's default stays where TORCHINDUCTOR_CACHE_DIR is
    already set."""
    import os
    import stat

    folder = Path(root) / "inductor"
    usable = False
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
        usable = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022
    if not usable:
        yield
        return
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    with temporary_cache_dir(str(folder)):
        yield


def build_compile(ctx: BuildContext, device: str, *, amp: bool = False) -> LoadedRuntime:
    """``torch.compile`` (inductor, static shapes, weights frozen as constants); the first call, which
    compiles, is timed as ``compile_seconds``."""
    import torch._inductor.config as inductor_config

    module = _eager_module(ctx, device)
    if amp:
        module = _Autocast(module, device, AMP_DTYPE[device])
    compiled, move = torch.compile(module, backend="inductor", dynamic=False), _inputs_on(device)

    def run(images: Tensor, mask: Tensor) -> Outputs:
        with torch.inference_mode():
            return _pair(compiled(*move(images, mask)))

    start = time.perf_counter()
    with inductor_config.patch(freezing=True):
        run(*ctx.example)
    runtime = LoadedRuntime("compile", "compile", device, "fp32", run)
    runtime.notes["compile_seconds"] = time.perf_counter() - start
    return runtime


def _format_backend(ctx: BuildContext, fmt: str, device: str, **runtime_options):
    from exporters.formats import get_format

    artifact = ctx.export(fmt)
    return artifact, get_format(fmt).loader(artifact.path, device=device, **runtime_options)


def build_format(fmt: str) -> Builder:
    """A row of the format table, loaded by the format's own loader (ONNX: see :func:`build_onnx`)."""
    if fmt == "onnx":
        return build_onnx

    def build(ctx: BuildContext, device: str) -> LoadedRuntime:
        artifact, backend = _format_backend(ctx, fmt, device)
        move = _inputs_on(backend.device)
        return LoadedRuntime(fmt, fmt, device, "fp32", lambda im, m: _pair(backend.run(move(im, m))), artifact)

    return build


def build_torchscript_frozen(ctx: BuildContext, device: str) -> LoadedRuntime:
    """The TorchScript artifact, ``torch.jit.freeze`` d and ``optimize_for_inference`` d."""
    artifact, backend = _format_backend(ctx, "torchscript", device)
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(backend.native.eval()))
    move = _inputs_on(device)

    def run(images: Tensor, mask: Tensor) -> Outputs:
        with torch.inference_mode():
            return _pair(frozen(*move(images, mask)))

    run(*ctx.example)  # the first calls specialise the graph: part of set-up, not of latency
    return LoadedRuntime("torchscript-frozen", "torchscript", device, "fp32", run, artifact)


def _onnx_session(ctx: BuildContext, artifact: Artifact, device: str):
    from exporters.formats import get_format

    options = ort.session_options(threads=ctx.threads, opt_level=ctx.ort_opt_level)
    backend = get_format("onnx").loader(artifact.path, device=device, session_options=options)
    return backend.native


def _onnx_runtime(ctx: BuildContext, artifact: Artifact, device: str, precision: str) -> LoadedRuntime:
    session = _onnx_session(ctx, artifact, device)
    runner = ort.iobinding_runner(session) if device.startswith("cuda") else ort.cpu_runner(session)
    return LoadedRuntime("onnx", "onnx", device, precision, runner, artifact)


def build_onnx(ctx: BuildContext, device: str) -> LoadedRuntime:
    """The fp32 ONNX export in ONNX Runtime (CPU EP, or CUDA EP with IOBinding)."""
    return _onnx_runtime(ctx, ctx.export("onnx"), device, "fp32")


def calibration_data(ctx: BuildContext) -> tuple[list[tuple[Tensor, Tensor]], str]:
    """The calibration batches and a digest of their bytes: a calibrated artifact is cached under it, so
    other images (``--calibration-images``, another dataset) make a new one instead of reusing a stale one."""
    batches = list(ctx.calibration())
    digest = hashlib.sha256()
    for images, mask in batches:
        digest.update(images.numpy().tobytes())
        digest.update(mask.numpy().tobytes())
    return batches, digest.hexdigest()[:16]


def build_onnx_int8_static(ctx: BuildContext, device: str) -> LoadedRuntime:
    batches, digest = calibration_data(ctx)
    quantised = ctx.derive(ctx.export("onnx"), "int8-static", ".onnx",
                                 lambda src, out: quantize.int8_static(src, out, batches),
                                 calibration=digest, recipe=quantize.RECIPES["int8-static"])
    return _onnx_runtime(ctx, quantised, device, "int8")


def build_onnx_int8_dynamic(ctx: BuildContext, device: str) -> LoadedRuntime:
    quantised = ctx.derive(ctx.export("onnx"), "int8-dynamic", ".onnx", quantize.int8_dynamic)
    return _onnx_runtime(ctx, quantised, device, "int8")


def build_onnx_fp16(ctx: BuildContext, device: str) -> LoadedRuntime:
    converted = ctx.derive(ctx.export("onnx"), "fp16", ".onnx", quantize.fp16)
    return _onnx_runtime(ctx, converted, device, "fp16")


class RowSkipped(RuntimeError):
    """A row this machine cannot run (e.g. bf16 on a CPU without it): reported as skipped, with the reason."""


def _openvino_runtime(ctx: BuildContext, artifact: Artifact, precision: str) -> LoadedRuntime:
    from exporters.openvino import load_openvino

    backend = load_openvino(artifact.path, precision=precision, threads=ctx.threads)
    return LoadedRuntime("openvino", "openvino", "cpu", precision,
                         lambda im, m: _pair(backend.run([im, m])), artifact)


def build_openvino(ctx: BuildContext, device: str) -> LoadedRuntime:
    """The IR in OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT=f32``."""
    return _openvino_runtime(ctx, ctx.export("openvino"), "fp32")


def build_openvino_bf16(ctx: BuildContext, device: str) -> LoadedRuntime:
    """The same IR with the bf16 hint (native on AVX512-BF16 / AMX-BF16: the bench skips it elsewhere unless
    named, see :mod:`detr_core.hardware.capability`)."""
    return _openvino_runtime(ctx, ctx.export("openvino"), "bf16")


def build_openvino_int8(ctx: BuildContext, device: str) -> LoadedRuntime:
    """NNCF post-training int8 of the IR, calibrated on prepared training images (as onnx-int8-static)."""
    batches, digest = calibration_data(ctx)
    quantised = ctx.derive(ctx.export("openvino"), "openvino-int8", ".xml",
                                 lambda src, out: quantize.openvino_int8(src, out, batches),
                                 calibration=digest, recipe=quantize.RECIPES["openvino-int8"])
    return _openvino_runtime(ctx, quantised, "fp32")


#: What each on-device format needs importable (the ``edge`` extra): to export and quantise, and to run.
EDGE_MODULES = {"executorch": ("executorch",), "litert": ("litert_torch", "ai_edge_litert")}


def _edge_ready(fmt: str) -> None:
    """:class:`RowSkipped` naming the install command when ``fmt``'s packages are missing."""
    from exporters.edge_file import missing

    reason = missing(*EDGE_MODULES[fmt])
    if reason:
        raise RowSkipped(f"{fmt}: {reason}")


def _edge_runtime(ctx: BuildContext, fmt: str, artifact: Artifact, precision: str) -> LoadedRuntime:
    from exporters.formats import get_format

    backend = get_format(fmt).loader(artifact.path, threads=ctx.threads)
    return LoadedRuntime(fmt, fmt, "cpu", precision, lambda im, m: _pair(backend.run([im, m])), artifact)


def _build_edge(fmt: str) -> Builder:
    """The fp32 artifact in its own runtime (CPU; ExecuTorch: XNNPACK delegate, LiteRT: interpreter + XNNPACK)."""

    def build(ctx: BuildContext, device: str) -> LoadedRuntime:
        _edge_ready(fmt)
        return _edge_runtime(ctx, fmt, ctx.export(fmt), "fp32")

    return build


def _build_edge_int8(fmt: str) -> Builder:
    """PT2E int8 of the eager model (heads fp32), calibrated on the same batches as the other int8 rows."""

    def build(ctx: BuildContext, device: str) -> LoadedRuntime:
        _edge_ready(fmt)
        batches, digest = calibration_data(ctx)
        make, source = getattr(quantize, f"{fmt}_int8"), ctx.export(fmt)
        quantised = ctx.derive(source, f"{fmt}-int8", source.path.suffix,
                               lambda src, out: make(ctx.model, src, out, batches),
                               calibration=digest, recipe=quantize.RECIPES[f"{fmt}-int8"])
        return _edge_runtime(ctx, fmt, quantised, "int8")

    return build


#: The runtime whose kernels run a family's rows on the CPU (others: torch).
FAMILY_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "executorch": "executorch", "litert": "litert"}


def _variant(name: str, family: str, precision: str, devices: tuple[str, ...], builder: Builder) -> RowSpec:
    return RowSpec(name, family, precision, devices, builder, FAMILY_RUNTIME.get(family, "torch"))


def _amp(builder: Callable[..., LoadedRuntime]) -> Builder:
    return lambda ctx, device: builder(ctx, device, amp=True)


BOTH = ("cpu", "cuda")

#: Variant rows, keyed by the format table entry they derive from (None: no artifact needed).
VARIANTS: dict[str | None, tuple[RowSpec, ...]] = {
    None: (
        _variant("eager", "eager", "fp32", BOTH, build_eager),
        _variant("eager-amp", "eager", "amp", BOTH, _amp(build_eager)),
        _variant("compile", "compile", "fp32", BOTH, build_compile),
        _variant("compile-amp", "compile", "amp", BOTH, _amp(build_compile)),
    ),
    "torchscript": (_variant("torchscript-frozen", "torchscript", "fp32", BOTH, build_torchscript_frozen),),
    "onnx": (
        _variant("onnx-int8-static", "onnx", "int8", ("cpu",), build_onnx_int8_static),
        _variant("onnx-int8-dynamic", "onnx", "int8", ("cpu",), build_onnx_int8_dynamic),
        _variant("onnx-fp16", "onnx", "fp16", ("cuda",), build_onnx_fp16),
    ),
    "openvino": (
        _variant("openvino-bf16", "openvino", "bf16", ("cpu",), build_openvino_bf16),
        _variant("openvino-int8", "openvino", "int8", ("cpu",), build_openvino_int8),
    ),
    "executorch": (_variant("executorch-int8", "executorch", "int8", ("cpu",), _build_edge_int8("executorch")),),
    "litert": (_variant("litert-int8", "litert", "int8", ("cpu",), _build_edge_int8("litert")),),
}

#: Builders and devices of format-table rows that differ from the generic ones.
FORMAT_ROWS: dict[str, tuple[tuple[str, ...], Builder]] = {
    "openvino": (("cpu",), build_openvino),
    "executorch": (("cpu",), _build_edge("executorch")),
    "litert": (("cpu",), _build_edge("litert")),
}


def row_specs() -> list[RowSpec]:
    """Every row: eager and compile variants, then per format-table entry its fp32 row and variants."""
    from exporters.formats import FORMATS

    rows = list(VARIANTS[None])
    for name in FORMATS:
        devices, builder = FORMAT_ROWS.get(name, (BOTH, build_format(name)))
        rows.append(RowSpec(name, name, "fp32", devices, builder, FAMILY_RUNTIME.get(name, "torch")))
        rows.extend(VARIANTS.get(name, ()))
    return rows


def family_names() -> tuple[str, ...]:
    """What ``--formats`` accepts as a family: eager, compile and the format table's names."""
    return tuple(dict.fromkeys(row.family for row in row_specs()))


def select_rows(selection: Iterable[str] | None = None) -> list[RowSpec]:
    """Rows whose family or own name is in ``selection`` (all rows for None); unknown names raise."""
    rows = row_specs()
    if selection is None:
        return rows
    wanted = list(selection)
    known = {r.family for r in rows} | {r.name for r in rows}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"unknown bench format(s) {unknown}; choose from {', '.join(sorted(known))}")
    return [r for r in rows if r.family in wanted or r.name in wanted]
