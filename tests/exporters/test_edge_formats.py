"""The on-device formats, ExecuTorch ``.pte`` (XNNPACK) and LiteRT ``.tflite``: exported through the format
table and validated against eager (fp32 max |Δ| <= 1e-4, detections agreeing, batch-mates), the mask a live
input, a padded batch equal to each image alone, metadata and content hash, ``predict --model`` agreeing with
eager, and bench rows skipped with the install command when the ``edge`` extra is absent.

Every test skips, naming ``pip install detrtool[edge]``, where the extra's packages are missing."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from exporters import export, load_runtime, read_metadata
from exporters.compare import output_deltas
from exporters.edge_file import FOOTER, MAGIC, missing
from exporters.runtime import eager_runtime
from exporters.validate import validate_artifact
from exporters.wrapper import wrap

CANVAS = (128, 128)
TRAINED_CANVAS = (96, 160)
EDGE = {"executorch": (".pte", ("executorch",)), "litert": (".tflite", ("litert_torch", "ai_edge_litert"))}
FORMATS = [pytest.param(name, marks=pytest.mark.skipif(bool(missing(*mods)), reason=str(missing(*mods))), id=name)
           for name, (_, mods) in EDGE.items()]


@pytest.fixture(scope="module")
def tiny_artifacts(tiny_model, images_dir, tmp_path_factory):
    """``get(fmt)``: the tiny reference model exported at batch 2 on a 128x128 canvas, validated at export."""
    cache, folder = {}, tmp_path_factory.mktemp("edge")

    def get(fmt: str):
        if fmt not in cache:
            cache[fmt] = export(tiny_model, fmt, folder / f"tiny{EDGE[fmt][0]}", input_size=CANVAS, batch_size=2,
                                validate_images=images_dir)
        return cache[fmt]

    return get


@pytest.fixture(scope="module")
def trained_artifacts(trained_model, trained_shapes_images, tmp_path_factory):
    """``get(fmt)``: the session's trained model (confident detections) at batch 2, validated at export."""
    cache, folder = {}, tmp_path_factory.mktemp("edge-trained")

    def get(fmt: str):
        if fmt not in cache:
            cache[fmt] = export(trained_model, fmt, folder / f"trained{EDGE[fmt][0]}", input_size=TRAINED_CANVAS,
                                batch_size=2, validate_images=trained_shapes_images)
        return cache[fmt]

    return get


@pytest.mark.parametrize("fmt", FORMATS)
def test_tiny_export_matches_eager_with_metadata(tiny_artifacts, fmt):
    result = tiny_artifacts(fmt)
    report = result.validation
    assert report.ok and report.max_abs_diff <= 1e-4, report.table()
    assert [row.name.split(":")[0] for row in report.rows][2:] == ["batch-mates", "batch-mates"], report.table()
    assert all(row.agreeing == row.detections for row in report.rows)
    print(f"{fmt} tiny 128x128 batch 2: max |Δ| {report.max_abs_diff:.2e}, "
          f"{result.path.stat().st_size / 2**20:.1f} MiB, exported in {result.export_seconds:.1f} s")
    meta = read_metadata(result.path)
    assert (meta.format, meta.batch_size, meta.input_size) == (fmt, 2, CANVAS)
    assert meta.input_names == ("images", "mask") and meta.output_names == ("pred_logits", "pred_boxes")
    assert len(meta.content_sha256) == 64
    data = result.path.read_bytes()
    assert data[-len(MAGIC):] == MAGIC and json.loads(data[-FOOTER.size - FOOTER.unpack(data[-16:])[0]:-16])
    assert {p.name for p in result.path.parent.iterdir()} <= {"tiny.pte", "tiny.tflite"}  # no temp left


@pytest.mark.parametrize("fmt", FORMATS)
def test_mask_is_live_and_a_padded_batch_equals_each_image_alone(tiny_model, tiny_artifacts, real_images, fmt):
    runtime = load_runtime(tiny_artifacts(fmt).path)
    images, mask, sizes = runtime.prepare(real_images[:2])
    batch = runtime(images, mask)
    unpadded = runtime(images, torch.zeros_like(mask))
    assert mask.any() and (batch["pred_logits"] - unpadded["pred_logits"]).abs().max() > 1e-3
    eager = wrap(tiny_model)
    for i in range(2):  # image i with a blank batch-mate (and, for eager, alone at batch 1)
        alone = runtime(torch.cat([images[i:i + 1], torch.zeros_like(images[:1])]),
                        torch.cat([mask[i:i + 1], torch.ones_like(mask[:1])]))
        with torch.inference_mode():
            ref = eager(images[i:i + 1], mask[i:i + 1])
        for name, expected in zip(runtime.output_names, ref, strict=True):
            assert (batch[name][i] - alone[name][0]).abs().max() <= 1e-4
            assert (batch[name][i] - expected[0]).abs().max() <= 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_trained_model_detections_agree(trained_model, trained_artifacts, trained_shapes_images, fmt):
    report = validate_artifact(trained_model, trained_artifacts(fmt).path, images=trained_shapes_images, count=8)
    assert report.ok and report.max_abs_diff <= 1e-4, report.table()
    real = report.rows[1]  # the 8 trained images padded into the canvas with their masks
    assert real.detections >= 8 and real.agreeing == real.detections, report.table()


@pytest.mark.parametrize("fmt", FORMATS)
def test_with_postprocess_labels_come_back_int64(trained_model, trained_shapes_images, tmp_path, fmt):
    result = export(trained_model, fmt, tmp_path / f"post{EDGE[fmt][0]}", input_size=TRAINED_CANVAS, batch_size=1,
                    with_postprocess=True, validate_images=trained_shapes_images)
    assert result.validation.ok, result.validation.table()
    runtime = load_runtime(result.path)
    out = runtime(*runtime.prepare([torch.zeros(3, 40, 60, dtype=torch.uint8)]))
    assert out["labels"].dtype == torch.int64 and out["scores"].dtype == torch.float32


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_model_agrees_with_eager(trained_shapes_checkpoint, trained_artifacts, trained_shapes_images,
                                         tmp_path, fmt):
    runner = CliRunner()
    images = sorted(trained_shapes_images.glob("*.png"))[:4]
    common = ["--threshold", "0.7", "--save-json", "--batch-size", "2"]
    eager = runner.invoke(cli, ["predict", *map(str, images), "--resume", str(trained_shapes_checkpoint),
                                "--input-size", f"{TRAINED_CANVAS[0]}x{TRAINED_CANVAS[1]}",
                                "--output-dir", str(tmp_path / "e"), *common])
    edge = runner.invoke(cli, ["predict", *map(str, images), "--model", str(trained_artifacts(fmt).path),
                               "--output-dir", str(tmp_path / "o"), *common])
    assert eager.exit_code == 0 and edge.exit_code == 0, eager.output + edge.output
    assert f"({fmt}, cpu, canvas 96x160, batch 2)" in edge.output
    ref = json.loads((tmp_path / "e" / "detections.json").read_text())
    got = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert len(ref) >= len(images) and len(got) == len(ref)
    key = lambda d: (d["image_id"], d["category_id"], round(d["bbox"][0]))  # noqa: E731
    for a, b in zip(sorted(ref, key=key), sorted(got, key=key), strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"], strict=True)) < 0.05 and abs(a["score"] - b["score"]) < 1e-4


@pytest.mark.parametrize("fmt", list(EDGE))
def test_missing_extra_names_the_install_command(monkeypatch, tiny_model, tmp_path, fmt):
    """Without the extra (simulated): the export is one line, the bench rows are skipped with the reason."""
    import exporters.edge_file as edge_file
    from bench.runtimes import RowSkipped, select_rows

    monkeypatch.setattr(edge_file, "available", lambda module: False)
    with pytest.raises(ValueError, match=r"pip install detrtool\[edge\]"):
        export(tiny_model, fmt, tmp_path / f"m{EDGE[fmt][0]}", input_size=(64, 64), validate=False)
    rows = select_rows([fmt])
    assert {r.name for r in rows} == {fmt, f"{fmt}-int8"} and all(r.devices == ("cpu",) for r in rows)
    for row in rows:
        with pytest.raises(RowSkipped, match=r"pip install detrtool\[edge\]"):
            row.builder(None, "cpu")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_keeps_the_contract_and_is_smaller(trained_model, trained_artifacts, trained_shapes_images, tmp_path,
                                                fmt):
    """bench's int8 rows (PT2E, heads fp32) on the trained model: metadata kept with its own hash, a quarter of
    the fp32 size or less (LiteRT, whose convolutions stay fp32: smaller), outputs close to eager's."""
    from bench import quantize
    from exporters.validation_inputs import read_folder

    source = trained_artifacts(fmt).path
    runtime = load_runtime(source)
    images = read_folder(trained_shapes_images, count=8)
    batches = [runtime.prepare(images[i:i + 2])[:2] for i in range(0, 8, 2)]
    out = tmp_path / f"int8{source.suffix}"
    getattr(quantize, f"{fmt}_int8")(trained_model, source, out, batches)
    int8 = load_runtime(out)
    assert int8.metadata.extra["quantized"].startswith(quantize.RECIPES[f"{fmt}-int8"])
    assert out.stat().st_size < (0.5 if fmt == "executorch" else 1.0) * source.stat().st_size  # litert: convs fp32
    eager = eager_runtime(wrap(trained_model), int8.metadata)
    worst = max(max(output_deltas(eager(*b), int8(*b), None)) for b in [runtime.prepare(images[:2])])
    print(f"{fmt}-int8 trained model: max |Δ| {worst:.3f}, {out.stat().st_size / 1e6:.2f} MB "
          f"(fp32 {source.stat().st_size / 1e6:.2f} MB)")
    assert 0.0 < worst < 1.0
