"""Latency of every bench runtime row (pytest-benchmark), grouped by model and input size.

Each benchmark's ``extra_info`` carries the row's precision, AP and ΔAP on a small shapes set and max |Δ|
of its raw outputs vs eager, so ``--benchmark-json`` files hold parity next to speed and
``pytest-benchmark compare`` can set runs side by side. With ``--benchmark-disable`` (``make test``)
only the cheapest rows run once at the smallest size: tests/bench covers every row.
"""

from __future__ import annotations

import pytest
import torch

from bench.accuracy import coco_metrics, collect_outputs, outputs_max_abs_diff
from bench.artifacts import ArtifactCache
from bench.data import calibration_batches, load_eval_set
from bench.runtimes import BuildContext, RowSkipped, eager_bench_runtime, row_specs
from detr_core.data.shapes import ShapesParams, generate_shapes
from detr_core.data.sources import DatasetSource

SIZES = {"tiny": ((128, 128), (256, 256)), "detr_resnet50": ((800, 800),)}
CHEAP_ROWS = ("eager", "onnx")
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
CASES = [(spec, device) for spec in row_specs() for device in DEVICES if device in spec.devices]


@pytest.fixture(scope="module")
def model_name(request) -> str:
    return request.config.getoption("--bench-model")


@pytest.fixture(scope="module")
def bench_model(model_name):
    from detr_core import get_model, load_checkpoint
    from tests.conftest import reference_path

    if model_name == "tiny":
        return load_checkpoint(reference_path("tiny_checkpoint.pth"), nheads=4)
    torch.manual_seed(0)
    return get_model(model_name).eval()


@pytest.fixture(scope="module")
def shapes_source(tmp_path_factory) -> DatasetSource:
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), ShapesParams(seed=5, image_size=64, train_count=2,
                                                                            val_count=2), progress=False)
    return DatasetSource(coco_path=str(root))


class Setting:
    """One model at one canvas: eval set, eager reference, build context (artifacts cached per setting)."""

    def __init__(self, model, canvas, source: DatasetSource, cache_dir) -> None:
        self.evalset = load_eval_set(source, canvas=canvas, batch_size=1)
        self.reference = collect_outputs(eager_bench_runtime(model), self.evalset)
        self.reference_ap = coco_metrics(self.reference, self.evalset)["AP"]
        batch = next(self.evalset.batches())
        self.example = (batch.images, batch.mask)
        self.ctx = BuildContext(model, ArtifactCache(cache_dir, model, canvas, 1), self.example,
                                lambda: calibration_batches(source, self.evalset, 2))


@pytest.fixture(scope="module")
def settings(bench_model, shapes_source, tmp_path_factory):
    made: dict[tuple[int, int], Setting] = {}

    def get(canvas: tuple[int, int]) -> Setting:
        if canvas not in made:
            made[canvas] = Setting(bench_model, canvas, shapes_source, tmp_path_factory.mktemp("artifacts"))
        return made[canvas]

    return get


@pytest.mark.parametrize("size_index", [0, 1], ids=["size0", "size1"])
@pytest.mark.parametrize(("spec", "device"), CASES, ids=[f"{s.name}-{d}" for s, d in CASES])
def test_runtime_latency(benchmark, model_name, settings, spec, device, size_index):
    sizes = SIZES[model_name]
    if size_index >= len(sizes):
        pytest.skip(f"{model_name} has {len(sizes)} input size(s)")
    if benchmark.disabled and (size_index > 0 or spec.name not in CHEAP_ROWS):
        pytest.skip("benchmarks disabled: tests/bench exercises this row")
    setting = settings(sizes[size_index])
    try:
        runtime = spec.build(setting.ctx, device)
    except RowSkipped as exc:  # a row this CPU cannot run (bf16 without bf16): skipped with the reason
        pytest.skip(str(exc))
    outputs = collect_outputs(runtime, setting.evalset)
    h, w = sizes[size_index]
    benchmark.group = f"{model_name} {h}x{w} batch 1"
    benchmark.extra_info.update(
        row=spec.name, device=device, precision=runtime.precision, max_abs_diff=outputs_max_abs_diff(outputs, setting.reference),
        AP=100 * coco_metrics(outputs, setting.evalset)["AP"], reference_AP=100 * setting.reference_ap,
        setup_seconds=runtime.setup_seconds, **runtime.notes)
    rounds = 1 if benchmark.disabled else (10 if model_name == "tiny" else 5)
    benchmark.pedantic(runtime, args=setting.example, rounds=rounds, warmup_rounds=0 if benchmark.disabled else 2)
    if spec.precision == "fp32":
        assert benchmark.extra_info["max_abs_diff"] <= 1e-4
