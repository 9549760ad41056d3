"""``detrtool demo`` plumbing: steps run in order with their wall times; slow steps are stubbed, bench is real."""

from __future__ import annotations

from click.testing import CliRunner

import cli.demo as demo_module
from cli.main import cli
from detr_core.checkpoint import save_checkpoint
from detr_core.config import to_dict


def test_demo_runs_every_step_and_prints_the_table(tiny_model, tmp_path, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "runs" / "checkpoint.pth",
                                 {"model": tiny_model.state_dict(), "config": {"model": to_dict(tiny_model.config)}})
    called = []
    monkeypatch.setattr(demo_module, "generate", lambda: called.append("generate"))
    monkeypatch.setattr(demo_module, "default_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(demo_module, "evaluate", lambda ckpt, out: called.append(("evaluate", ckpt)))
    monkeypatch.setattr(demo_module, "export_all", lambda ckpt, out, canvas: called.append(("export", canvas)))
    result = CliRunner().invoke(cli, ["demo", "--formats", "eager", "--max-images", "2", "--warmup", "0",
                                      "--runs", "1", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert called == ["generate", ("evaluate", checkpoint), ("export", (128, 128))]
    assert "using the trained shapes default" in result.output
    assert "| eager | cpu | fp32 | ✅ |" in result.output
    assert "demo wall time" in result.output and "bench" in result.output.splitlines()[-1]
