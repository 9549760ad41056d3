"""Dynamic exports (``export(..., dynamic=True)``, ``detrtool export --dynamic``): symbolic batch, height and
width in ONNX (dynamo and legacy) and torch.export, TorchScript script shape-agnostic; parity with eager
at batch 1 and 3 on two canvases, a live mask (all-False = no mask), the .pt2 gate passing the program's
symbolic strings through its grammar, and predict on images of different sizes."""

from __future__ import annotations

import json
import zipfile

import onnx
import pytest
import torch

from detr_core.data.shapes import ShapesParams, generate_shapes
from exporters import export, load_runtime
from exporters.compare import max_abs_diff
from exporters.metadata import DYNAMIC_LIMITS
from exporters.predict.model import checkpoint_resize_rule
from exporters.prepare import target_size
from exporters.validation_inputs import crop_fraction, example_inputs, read_folder
from exporters.wrapper import wrap
from tests.cli.bad_input import run_cli

CANVAS = (96, 128)
OTHER = (128, 96)
DYNAMIC_VARIANTS = {
    "onnx-dynamo": ("onnx", ".onnx", {}),
    "onnx-legacy": ("onnx", ".onnx", {"exporter": "legacy", "opset": 17}),
    "torch-export": ("torch-export", ".pt2", {}),
    "torchscript": ("torchscript", ".ts", {}),
}
VALIDATED = ("onnx-dynamo", "torch-export")


@pytest.fixture(scope="module")
def dynamic_artifacts(tiny_model, images_dir, tmp_path_factory):
    """``variant -> ExportResult``, each exported once with ``dynamic=True`` at 96x128; the ones in
    :data:`VALIDATED` also validated at export (the others' parity is asserted below)."""
    folder = tmp_path_factory.mktemp("dynamic")
    made = {}
    for variant, (fmt, suffix, options) in DYNAMIC_VARIANTS.items():
        made[variant] = export(tiny_model, fmt, folder / f"{variant}{suffix}", input_size=CANVAS, dynamic=True,
                               validate=variant in VALIDATED, validate_images=images_dir, **options)
    return made


@pytest.fixture(scope="module")
def dynamic_runtimes(dynamic_artifacts):
    return {variant: load_runtime(result.path) for variant, result in dynamic_artifacts.items()}


@pytest.mark.parametrize("variant", VALIDATED)
def test_export_validation_covers_two_batches_and_two_canvases(dynamic_artifacts, variant):
    result = dynamic_artifacts[variant]
    meta = result.metadata
    assert meta.dynamic and meta.input_size == CANVAS and meta.batch_size == 2
    assert meta.dynamic_limits == {k: list(v) for k, v in DYNAMIC_LIMITS.items()}
    names = [row.name for row in result.validation.rows]
    for hw in ("96x128", "128x96"):
        for batch in (1, 3):
            assert f"dynamic {hw}, batch {batch}, padded masks" in names
    assert "dynamic 128x96, batch 3, mask all False" in names
    assert result.validation.ok and result.validation.max_abs_diff <= 1e-4


@pytest.mark.parametrize("variant", list(DYNAMIC_VARIANTS))
@pytest.mark.parametrize("batch, canvas", [(1, CANVAS), (3, CANVAS), (1, OTHER), (3, OTHER), (2, (160, 64))])
def test_parity_with_eager_at_any_batch_and_canvas(tiny_model, dynamic_runtimes, variant, batch, canvas):
    images, mask = example_inputs(batch_size=batch, input_size=canvas, with_postprocess=False, seed=11)
    assert mask.any() and not mask.all()
    with torch.inference_mode():
        ref = wrap(tiny_model)(images, mask)
    out = dynamic_runtimes[variant](images, mask)
    assert out["pred_logits"].shape == (batch, tiny_model.num_queries, tiny_model.num_classes + 1)
    assert max_abs_diff(out["pred_logits"], ref[0]) <= 1e-4
    assert max_abs_diff(out["pred_boxes"], ref[1]) <= 1e-4


@pytest.mark.parametrize("variant", ["onnx-dynamo", "torch-export"])
def test_mask_is_live_and_all_false_equals_no_mask(tiny_model, dynamic_runtimes, variant):
    images, mask = example_inputs(batch_size=3, input_size=OTHER, with_postprocess=False, seed=5)
    runtime = dynamic_runtimes[variant]
    with torch.inference_mode():
        unmasked = tiny_model(images)
    clear = runtime(images, torch.zeros_like(mask))
    assert max_abs_diff(clear["pred_logits"], unmasked["pred_logits"]) <= 1e-4
    assert max_abs_diff(clear["pred_boxes"], unmasked["pred_boxes"]) <= 1e-4
    padded = runtime(images, mask)
    assert max_abs_diff(padded["pred_logits"], clear["pred_logits"]) > 1e-3  # the mask reaches the graph


def test_onnx_inputs_and_outputs_are_symbolic(dynamic_artifacts):
    for variant in ("onnx-dynamo", "onnx-legacy"):
        graph = onnx.load(str(dynamic_artifacts[variant].path)).graph
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
        assert dims == {"images": ["batch", 3, "height", "width"], "mask": ["batch", "height", "width"]}, variant
        assert graph.output[0].type.tensor_type.shape.dim[0].dim_param, variant


def test_dynamic_pt2_holds_symbolic_strings_that_the_gate_passes(dynamic_artifacts, dynamic_runtimes):
    with zipfile.ZipFile(dynamic_artifacts["torch-export"].path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("models/model.json"))
        program = json.loads(archive.read(name))
    text = json.dumps(program)
    assert program["guards_code"] and program["range_constraints"] and '"expr_str"' in text
    assert {tuple(v.values()) for v in program["range_constraints"].values()} == \
        {tuple(DYNAMIC_LIMITS[k]) for k in ("batch", "height", "width")}
    assert dynamic_runtimes["torch-export"].format == "torch-export"  # loaded through the gate


def test_static_export_is_unchanged(tiny_model, tmp_path):
    result = export(tiny_model, "onnx", tmp_path / "s.onnx", input_size=CANVAS, exporter="legacy", opset=17,
                    validate=False)
    assert not result.metadata.dynamic and result.metadata.dynamic_limits == {}
    dims = [d.dim_value for d in onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *CANVAS]


@pytest.fixture(scope="module")
def varied_images(trained_shapes_images, tmp_path_factory):
    """The trained model's images cropped to five different sizes (PNG)."""
    import PIL.Image

    folder = tmp_path_factory.mktemp("varied")
    crops = ((1.0, 1.0), (0.7, 1.0), (1.0, 0.6), (0.8, 0.9), (1.0, 0.75))
    for i, image in enumerate(read_folder(trained_shapes_images, count=5)):
        PIL.Image.fromarray(crop_fraction(image, *crops[i]).permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return folder


def test_predict_on_a_dynamic_artifact_equals_eager(trained_model, trained_shapes_checkpoint, varied_images,
                                                    tmp_path):
    size, max_size = checkpoint_resize_rule(trained_shapes_checkpoint)
    art = export(trained_model, "onnx", tmp_path / "dyn.onnx", input_size=(size, size), dynamic=True, size=size,
                 max_size=max_size, exporter="legacy", opset=17, validate=False).path
    dyn = run_cli(["predict", varied_images, "--model", art, "--batch-size", 3, "--save-json",
                   "--output-dir", tmp_path / "dyn"])
    assert dyn.exit_code == 0, dyn.output
    assert "dynamic" in dyn.output and "ignored" not in dyn.output
    eager = run_cli(["predict", varied_images, "--resume", trained_shapes_checkpoint, "--batch-size", 3,
                     "--save-json", "--output-dir", tmp_path / "eager"])  # eager also pads to each batch's largest
    assert eager.exit_code == 0, eager.output
    found, expected = (json.loads((tmp_path / d / "detections.json").read_text()) for d in ("dyn", "eager"))
    assert len(found) == len(expected) >= 5
    for a, b in zip(found, expected, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert abs(a["score"] - b["score"]) <= 1e-4
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"], strict=True)) <= 1e-2
    assert len(list((tmp_path / "dyn").glob("*.png"))) == 5


def test_runtime_prepare_pads_each_batch_to_its_largest(dynamic_runtimes, tmp_path):
    runtime = dynamic_runtimes["onnx-legacy"]
    root = generate_shapes(tmp_path, ShapesParams(train_count=0, val_count=2), progress=False)
    wide, narrow = read_folder(root / "val2017", count=2)
    pictures = [wide, crop_fraction(narrow, 1.0, 0.5)]
    images, mask, sizes = runtime.prepare(pictures)
    meta = runtime.metadata
    resized = [target_size(*p.shape[1:], canvas=None, size=meta.size, max_size=meta.max_size) for p in pictures]
    assert resized[0] != resized[1]
    assert tuple(images.shape[2:]) == tuple(max(r[i] for r in resized) for i in (0, 1))
    for i, (h, w) in enumerate(resized):  # each image in the top-left corner, the rest padding
        assert not mask[i, :h, :w].any() and int((~mask[i]).sum()) == h * w
    assert sizes.tolist() == [list(wide.shape[1:]), list(pictures[1].shape[1:])]
    assert runtime(images, mask)["pred_logits"].shape[0] == 2


def test_dynamic_with_postprocess_takes_orig_sizes_of_any_batch(small_checkpoint, tmp_path):
    from detr_core import load_checkpoint
    from detr_core.postprocess import postprocess_tensors

    model = load_checkpoint(small_checkpoint)
    result = export(model, "torch-export", tmp_path / "post.pt2", input_size=(64, 96), dynamic=True,
                    with_postprocess=True)
    assert result.validation.ok and result.metadata.input_names == ("images", "mask", "orig_sizes")
    images, mask, sizes = example_inputs(batch_size=3, input_size=(96, 64), with_postprocess=True, seed=2)
    out = load_runtime(result.path)(images, mask, sizes)
    with torch.inference_mode():
        raw = model(images, mask)
    scores, labels, boxes = postprocess_tensors(raw["pred_logits"], raw["pred_boxes"], sizes)
    assert max_abs_diff(out["scores"], scores) <= 1e-4 and torch.equal(out["labels"], labels)
    assert max_abs_diff(out["boxes"], boxes) <= 1e-3  # pixels
