"""``detrtool export`` in-process: exit codes and the lines users see."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import cli
from exporters import read_metadata


def _run(*args: str):
    return CliRunner().invoke(cli, ["export", *args], catch_exceptions=False)


def test_export_onnx_validated(tiny_checkpoint_path, images_dir, tmp_path):
    out = tmp_path / "tiny.onnx"
    result = _run("--resume", str(tiny_checkpoint_path), "--nheads", "4", "--format", "onnx", "--exporter", "legacy",
                  "--opset", "17", "--input-size", "96x128", "--batch-size", "2", "--output", str(out),
                  "--validate-images", str(images_dir))
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (onnx" in result.output and "canvas 96x128, batch 2" in result.output
    assert "| full canvas 96x128, batch 2 |" in result.output and "validation ok: max |Δ|" in result.output
    meta = read_metadata(out)
    assert meta.extra["checkpoint"] == tiny_checkpoint_path.name and len(meta.extra["checkpoint_sha256"]) == 64


def test_export_torch_export_no_validate(tiny_checkpoint_path, tmp_path):
    out = tmp_path / "tiny.pt2"
    result = _run("--resume", str(tiny_checkpoint_path), "--nheads", "4", "--format", "torch-export",
                  "--input-size", "64x96", "--with-postprocess", "--no-validate", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "validation" not in result.output
    assert read_metadata(out).output_names == ("scores", "labels", "boxes")


def _error_line(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_export_errors(tiny_checkpoint_path, tmp_path):
    ckpt = str(tiny_checkpoint_path)
    assert "unknown export format 'tflite'" in _error_line(_run("--resume", ckpt, "--format", "tflite"))
    line = _error_line(_run("--resume", ckpt, "--format", "onnx", "--opset", "17"))
    assert "opset 17 is too low for the dynamo ONNX exporter" in line
    assert "--opset does not apply" in _error_line(_run("--resume", ckpt, "--format", "torchscript", "--opset", "18"))
    not_detr = tmp_path / "notes.pth"
    not_detr.write_text("not a checkpoint")
    assert "not a readable PyTorch checkpoint" in _error_line(_run("--resume", str(not_detr), "--format", "onnx"))
    bad_size = _run("--resume", ckpt, "--format", "onnx", "--input-size", "800")
    assert bad_size.exit_code == 2 and "HEIGHTxWIDTH" in bad_size.output


def test_export_lists_every_format_of_the_table():
    from cli.export import FORMAT_NAMES
    from exporters.formats import format_names

    assert sorted(FORMAT_NAMES) == sorted(format_names())
