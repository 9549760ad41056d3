"""``detrtool bench`` end to end on the tiny model and a three-image set; a broken artifact fails the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.artifacts import ArtifactCache
from cli.main import cli


def _args(tiny_checkpoint_path, shapes_root, tmp_path, *extra: str) -> list[str]:
    return ["bench", "--resume", str(tiny_checkpoint_path), "--nheads", "4", "--coco-path", str(shapes_root),
            "--input-size", "128x128", "--warmup", "1", "--runs", "2", "--calibration-images", "2",
            "--peak-size", "256", "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *extra]


def test_bench_cli_writes_table_json_and_chart(tiny_checkpoint_path, shapes_root, tmp_path):
    result = CliRunner().invoke(cli, _args(tiny_checkpoint_path, shapes_root, tmp_path,
                                           "--formats", "eager,torch-export", "--batch-size", "2"))
    assert result.exit_code == 0, result.output
    assert "| format | device | precision | status |" in result.output
    assert "| torch-export | cpu | fp32 | ✅ |" in result.output
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["eager", "eager-amp", "torch-export"]
    assert data["setup"]["canvas"] == [128, 128] and data["setup"]["images"] == 3
    assert data["failures"] == []
    assert (tmp_path / "out" / "bench.png").stat().st_size > 0
    assert "torch-export" in (tmp_path / "out" / "bench.md").read_text()


def test_broken_artifact_is_a_failed_row_and_fails_the_run(tiny_model, tiny_checkpoint_path, shapes_root, tmp_path):
    cache = ArtifactCache(tmp_path / "cache", tiny_model, (128, 128), 1)
    folder = tmp_path / "cache" / cache.export_key("onnx")
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"this is not an ONNX model")
    (folder / "export.json").write_text(json.dumps({"seconds": 1.0}))
    result = CliRunner().invoke(cli, _args(tiny_checkpoint_path, shapes_root, tmp_path, "--formats", "onnx"))
    assert result.exit_code == 1, result.output
    assert "| onnx | cpu | fp32 | ❌ |" in result.output
    assert "FAIL onnx (cpu) failed:" in result.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "bench.json").read_text())["rows"]}
    assert rows["onnx"]["status"] == "❌" and rows["onnx"]["error"]
    assert rows["onnx-int8-dynamic"]["failures"] == []  # lossy rows never fail the run


def test_bench_cli_errors_are_one_line(tiny_checkpoint_path, shapes_root, tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(cli, _args(tiny_checkpoint_path, shapes_root, tmp_path, "--formats", "tensorrt"))
    assert result.exit_code != 0 and "unknown bench format" in result.output
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["bench", "--coco-path", str(shapes_root)])
    assert result.exit_code != 0 and "no checkpoint at" in result.output
    result = runner.invoke(cli, ["bench", "--resume", str(tiny_checkpoint_path), "--model", "detr_resnet50"])
    assert result.exit_code != 0 and "not both" in result.output


@pytest.mark.parametrize("bad", ["12", "0x5", "axb"])
def test_bench_cli_rejects_bad_input_size(tiny_checkpoint_path, bad):
    result = CliRunner().invoke(cli, ["bench", "--resume", str(tiny_checkpoint_path), "--input-size", bad])
    assert result.exit_code == 2


@pytest.mark.parametrize("damage", ["flipped bin", "truncated xml", "missing bin"])
def test_corrupted_ir_is_a_failed_row_and_fails_the_run(damage, tiny_model, tiny_checkpoint_path, shapes_root,
                                                         tmp_path, good_ir):
    import shutil

    from exporters.openvino import weights_path

    cache = ArtifactCache(tmp_path / "cache", tiny_model, (128, 128), 1)
    folder = tmp_path / "cache" / cache.export_key("openvino")
    folder.mkdir(parents=True)
    xml = Path(shutil.copy(good_ir, folder / "model.xml"))
    shutil.copy(weights_path(good_ir), folder / "model.bin")
    (folder / "export.json").write_text(json.dumps({"seconds": 1.0}))
    if damage == "flipped bin":
        data = bytearray((folder / "model.bin").read_bytes())
        data[1000:5096] = bytes(b ^ 0xFF for b in data[1000:5096])
        (folder / "model.bin").write_bytes(bytes(data))
    elif damage == "truncated xml":
        xml.write_bytes(xml.read_bytes()[:-200])
    else:
        (folder / "model.bin").unlink()
    result = CliRunner().invoke(cli, _args(tiny_checkpoint_path, shapes_root, tmp_path, "--formats", "openvino",
                                           "--no-padded-batch"))
    assert result.exit_code == 1, result.output
    assert "| openvino | cpu | fp32 | ❌ |" in result.output
    reason = {"flipped bin": "content hash mismatch", "truncated xml": "truncated",
              "missing bin": "model.bin is missing"}[damage]
    assert "FAIL openvino (cpu) failed:" in result.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "bench.json").read_text())["rows"]}
    assert reason in rows["openvino"]["error"]
    assert rows["openvino-int8"]["status"] == "❌" and rows["openvino-int8"]["failures"] == []  # lossy


@pytest.fixture(scope="module")
def good_ir(tiny_model, tmp_path_factory):
    from exporters import export

    return export(tiny_model, "openvino", tmp_path_factory.mktemp("ir") / "model.xml", input_size=(128, 128),
                  validate=False).path
