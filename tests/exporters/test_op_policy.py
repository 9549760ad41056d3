"""The load-time op policy (:mod:`exporters.op_policy`): no allowed operator takes a file (checked against
torch's own schemas), and every variant detrtool exports — TorchScript script / trace / dynamic / with
post-processing, torch.export static / dynamic with post-processing, of the tiny reference model, the
session's trained model (small CNN), a GroupNorm + learned-embedding + pre-norm model with the plain
attention, and DETR-R50-DC5 — loads under it and gives eager's outputs."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import torch

from detr_core import ModelConfig, build_model
from exporters import export, load_runtime
from exporters.op_policy import ATEN_OPS, OPERATOR_FUNCS, allows_kind, allows_target
from exporters.runtime import eager_runtime
from exporters.validation_inputs import example_inputs
from exporters.wrapper import wrap

FILE_ARGUMENT = re.compile(r"file|path|dir|url|name$", re.IGNORECASE)
IO_NAMESPACES = ("profiler", "debugprims", "debug_mode_ops", "c10d", "_c10d_functional", "symm_mem", "cuda")


def _schemas() -> dict[str, list]:
    by_name: dict[str, list] = defaultdict(list)
    for schema in torch._C._jit_get_all_schemas():
        by_name[schema.name].append(schema)
    return by_name


def _touches_files(schemas: list) -> bool:
    """The rule: an operator with a string argument named like a file, a path or a name."""
    return any(str(a.type) in ("str", "Optional[str]") and FILE_ARGUMENT.search(a.name)
               for s in schemas for a in s.arguments)


def test_no_allowed_operator_takes_a_file_and_the_rule_is_live():
    schemas = _schemas()
    assert _touches_files(schemas["aten::from_file"]) and _touches_files(schemas["aten::save"])
    assert _touches_files(schemas["debugprims::load_tensor"])
    missing = sorted(n for n in ATEN_OPS if f"aten::{n}" not in schemas)
    assert not missing, f"allowlisted names that are no ATen operator: {missing}"
    assert not [n for n in ATEN_OPS if _touches_files(schemas[f"aten::{n}"])]
    assert not [n for n in schemas if n.startswith(IO_NAMESPACES) and allows_kind(n)]


@pytest.mark.parametrize("op, allowed", [
    ("aten::conv2d", True), ("prim::If", True), ("aten::from_file", False), ("aten::save", False),
    ("prim::CallMethod", False), ("prim::Print", False), ("profiler::_record_function_enter", False),
    ("torch.ops.aten.conv2d.default", True), ("_operator.floordiv", True),
    ("torch.ops.aten.from_file.default", False), ("torch.ops.aten.save.default", False),
    ("torch.ops.profiler._record_function_enter.default", False), ("torch.os.system", False),
    ("_operator.call", False), ("torch.ops.prims.convert_element_type.default", False),
])
def test_policy_decisions(op, allowed):
    assert (allows_kind(op) if "::" in op else allows_target(op)) is allowed
    assert OPERATOR_FUNCS.isdisjoint({"call", "attrgetter", "methodcaller"})


GN_LEARNED = {"backbone": "small_cnn_gn", "position_embedding": "learned", "pre_norm": True, "hidden_dim": 32,
              "nheads": 4, "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 64, "num_queries": 5,
              "num_classes": 3, "aux_loss": False}
R50_DC5 = {"backbone": "resnet50", "dilation": True, "hidden_dim": 32, "nheads": 4, "enc_layers": 1,
           "dec_layers": 1, "dim_feedforward": 64, "num_queries": 5, "num_classes": 3}
#: id -> (format, options, with_postprocess, dynamic)
VARIANTS = {
    "script": ("torchscript", {}, False, False),
    "trace": ("torchscript", {"method": "trace"}, False, False),
    "script-dynamic-post": ("torchscript", {}, True, True),
    "pt2": ("torch-export", {}, False, False),
    "pt2-dynamic-post": ("torch-export", {}, True, True),
}
CASES = [(m, v) for m in ("tiny", "gn-learned-prenorm") for v in VARIANTS]
CASES += [(m, v) for m in ("trained", "r50-dc5") for v in ("script", "trace", "pt2")]


@pytest.fixture(scope="module")
def models(request):
    """``models(name)``: the model, built or loaded once per module."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            if name == "gn-learned-prenorm":
                cache[name] = build_model(ModelConfig(**GN_LEARNED), attention_impl="torch").eval()
            elif name == "r50-dc5":
                cache[name] = build_model(ModelConfig(**R50_DC5)).eval()
            else:
                cache[name] = request.getfixturevalue(f"{name}_model")
        return cache[name]

    return get


@pytest.mark.parametrize("model_name, variant", CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_every_detrtool_export_loads_under_the_policy(models, model_name, variant, tmp_path):
    fmt, options, post, dynamic = VARIANTS[variant]
    model = models(model_name)
    path = tmp_path / f"m{'.ts' if fmt == 'torchscript' else '.pt2'}"
    result = export(model, fmt, path, input_size=(64, 96), with_postprocess=post, dynamic=dynamic,
                    validate=False, **options)
    runtime = load_runtime(path)
    inputs = example_inputs(batch_size=1, input_size=(64, 96), with_postprocess=post, seed=1)
    got = runtime(*inputs)
    want = eager_runtime(wrap(model, with_postprocess=post), result.metadata)(*inputs)
    for name in result.metadata.output_names:
        assert torch.allclose(got[name].float(), want[name].float(), atol=1e-4), name
