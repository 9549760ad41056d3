"""The OpenVINO IR format: export validated against eager, the pair written atomically, metadata and content
hash over both files, loading refuses damaged or foreign IRs, every precision on the trained model, and
``predict --model model.xml`` agreeing with eager."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from exporters import ArtifactError, IntegrityError, export, load_runtime, read_metadata
from exporters.compare import detection_agreement, detections_of, output_deltas
from exporters.openvino import cpu_supports, load_openvino, weights_path
from exporters.runtime import eager_runtime
from exporters.validate import ValidationError, validate_artifact
from exporters.validation_inputs import read_folder
from exporters.wrapper import wrap

CANVAS = (96, 160)


@pytest.fixture(scope="module")
def ir(tiny_model, images_dir, tmp_path_factory):
    """The tiny model as an IR, batch 2 (validated at export on real images of varied sizes)."""
    return export(tiny_model, "openvino", tmp_path_factory.mktemp("ov") / "model.xml", input_size=(128, 160),
                  batch_size=2, validate_images=images_dir)


@pytest.fixture(scope="module")
def trained_ir(trained_model, trained_shapes_images, tmp_path_factory):
    return export(trained_model, "openvino", tmp_path_factory.mktemp("ov-trained") / "model.xml",
                  input_size=CANVAS, batch_size=2, validate_images=trained_shapes_images)


def test_export_writes_the_pair_validated_with_metadata(ir, tiny_model):
    assert ir.validation.ok and ir.validation.max_abs_diff <= 1e-4
    assert len(ir.validation.rows) == 4  # full canvas, real images, both batch-mate checks
    assert sorted(p.name for p in ir.path.parent.iterdir()) == ["model.bin", "model.xml"]  # no temp left
    meta = read_metadata(ir.path)
    assert (meta.format, meta.batch_size, meta.input_size) == ("openvino", 2, (128, 160))
    assert meta.input_names == ("images", "mask") and meta.format_options == {"weights": "fp32"}
    assert len(meta.content_sha256) == 64
    # fp32 weights: 4 bytes per parameter at least (batch norms fold into convolutions; fp16 would be ~2)
    params = sum(p.numel() for p in tiny_model.parameters())
    assert weights_path(ir.path).stat().st_size >= 3.5 * params


def test_mask_is_a_live_input(ir, real_images):
    runtime = load_runtime(ir.path)
    images, mask, sizes = runtime.prepare(real_images[:2])
    out = runtime(images, mask)
    unpadded = runtime(images, torch.zeros_like(mask))
    assert mask.any() and (out["pred_logits"] - unpadded["pred_logits"]).abs().max() > 1e-3


def test_fp32_matches_eager_on_the_trained_model(trained_model, trained_ir, trained_shapes_images):
    report = validate_artifact(trained_model, trained_ir.path, images=trained_shapes_images, count=8)
    assert report.ok and report.max_abs_diff <= 1e-4, report.table()
    real = report.rows[1]  # the 8 trained images, padded into the canvas with their masks
    assert real.detections >= 8 and real.agreeing == real.detections, report.table()


def _deltas(trained_model, trained_ir, trained_shapes_images, precision):
    """(max |Δ|, agreeing detections %) of the IR compiled with ``precision`` vs eager, 8 trained images."""
    backend = load_openvino(trained_ir.path, precision=precision)
    meta = trained_ir.metadata
    from exporters.runtime import Runtime

    runtime, eager = Runtime(backend, meta), eager_runtime(wrap(trained_model), meta)
    images = read_folder(trained_shapes_images, count=8)
    worst, union, agree = 0.0, 0, 0
    for start in range(0, 8, 2):
        batch = runtime.prepare(images[start:start + 2])
        ref, out = eager(*batch), runtime(*batch)
        worst = max(worst, *output_deltas(ref, out, batch[2]))
        u, a = detection_agreement(detections_of(ref, batch[2]), detections_of(out, batch[2]), threshold=0.5)
        union, agree = union + u, agree + a
    return worst, 100.0 * agree / max(union, 1), union


def test_bf16_hint_is_reported_or_skipped(trained_model, trained_ir, trained_shapes_images):
    if not cpu_supports("bf16"):
        pytest.skip("this CPU has no bf16 (OpenVINO's CPU capabilities lack BF16)")
    worst, agreement, union = _deltas(trained_model, trained_ir, trained_shapes_images, "bf16")
    print(f"openvino bf16 vs eager: max |Δ| {worst:.2e}, {agreement:.1f} % of {union} detections agree")
    assert union > 0 and 0.0 < worst < 1.0  # reported, never judged: bf16 really ran (not fp32) and is sane


def test_fp32_hint_is_the_default(trained_model, trained_ir, trained_shapes_images):
    worst, agreement, union = _deltas(trained_model, trained_ir, trained_shapes_images, "fp32")
    assert worst <= 1e-4 and agreement == 100.0 and union > 0
    assert load_openvino(trained_ir.path).native.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"


def test_failed_validation_leaves_the_previous_pair_untouched(tiny_model, ir, tmp_path):
    target = tmp_path / "model.xml"
    shutil.copy(ir.path, target)
    shutil.copy(weights_path(ir.path), weights_path(target))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValidationError, match="previous file is untouched"):
        export(tiny_model, "openvino", target, input_size=(64, 64), tolerance=0.0)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _copy(ir, folder):
    folder.mkdir()
    shutil.copy(ir.path, folder / "model.xml")
    shutil.copy(weights_path(ir.path), folder / "model.bin")
    return folder / "model.xml"


def _flip(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
    path.write_bytes(bytes(data))


def test_damaged_pairs_are_refused_in_one_line(ir, tmp_path):
    flipped = _copy(ir, tmp_path / "flipped")
    _flip(weights_path(flipped), weights_path(flipped).stat().st_size // 2)
    with pytest.raises(IntegrityError, match="content hash mismatch"):
        load_runtime(flipped)
    truncated = _copy(ir, tmp_path / "truncated")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with pytest.raises((ArtifactError, ValueError), match="the .xml is truncated"):
        load_runtime(truncated)
    missing = _copy(ir, tmp_path / "missing")
    weights_path(missing).unlink()
    with pytest.raises(ArtifactError, match="model.bin is missing"):
        load_runtime(missing)
    short = _copy(ir, tmp_path / "short")
    weights_path(short).write_bytes(weights_path(short).read_bytes()[:-4])
    with pytest.raises(ArtifactError, match="has .* bytes, the IR needs"):
        load_runtime(short)


def test_foreign_constructs_are_refused_before_openvino_reads_them(ir, tmp_path):
    dtd = _copy(ir, tmp_path / "dtd")
    text = dtd.read_text()
    dtd.write_text(text.replace("<net ", '<!DOCTYPE net [<!ENTITY x SYSTEM "/etc/passwd">]>\n<net ', 1))
    with pytest.raises(ArtifactError, match="DTD or entities"):
        load_runtime(dtd)
    options = _copy(ir, tmp_path / "options")
    options.write_text(text.replace("<rt_info>", '<rt_info>\n\t\t<runtime_options>\n\t\t\t<CACHE_DIR value="/tmp" />'
                                    "\n\t\t</runtime_options>", 1))
    with pytest.raises(ArtifactError, match="runtime_options"):
        load_runtime(options)


def test_metadata_edit_without_restamp_is_a_mismatch_only_for_content(ir, tmp_path):
    edited = _copy(ir, tmp_path / "edited")
    text = edited.read_text()
    edited.write_text(text.replace('<layer id="0" name="images"', '<layer id="0" name="imagez"', 1))
    with pytest.raises(IntegrityError):
        load_runtime(edited)


def test_predict_model_xml_agrees_with_eager(trained_shapes_checkpoint, trained_ir, trained_shapes_images, tmp_path):
    runner = CliRunner()
    images = sorted(trained_shapes_images.glob("*.png"))[:4]
    common = ["--threshold", "0.7", "--save-json", "--batch-size", "2"]
    eager = runner.invoke(cli, ["predict", *map(str, images), "--resume", str(trained_shapes_checkpoint),
                                "--input-size", f"{CANVAS[0]}x{CANVAS[1]}", "--output-dir", str(tmp_path / "e"),
                                *common])
    ov = runner.invoke(cli, ["predict", *map(str, images), "--model", str(trained_ir.path),
                             "--output-dir", str(tmp_path / "o"), *common])
    assert eager.exit_code == 0 and ov.exit_code == 0, eager.output + ov.output
    assert "(openvino, cpu, canvas 96x160, batch 2)" in ov.output
    ref = json.loads((tmp_path / "e" / "detections.json").read_text())
    got = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert len(ref) >= len(images) and len(got) == len(ref)
    key = lambda d: (d["image_id"], d["category_id"], round(d["bbox"][0]))  # noqa: E731
    for a, b in zip(sorted(ref, key=key), sorted(got, key=key), strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"], strict=True)) < 0.05 and abs(a["score"] - b["score"]) < 1e-4


def test_int8_keeps_exactly_the_prediction_heads_fp32(ir):
    """bench's openvino-int8 leaves the heads unquantised: the class Linear and the box MLP's three, i.e. the
    four MatMuls between the decoder's last LayerNorm and the outputs (and no MatMul of the decoder)."""
    import openvino as ov

    from bench.quantize import head_matmuls

    model = ov.Core().read_model(str(ir.path))
    heads = head_matmuls(model)
    matmuls = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    assert len(heads) == 4 and set(heads) == set(matmuls[-4:])  # the heads run last, after the decoder
    assert len(matmuls) > 4
