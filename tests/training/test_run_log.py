"""``log.jsonl`` repair on resume (run_log.reconcile_log), the guarded append, and a failed evaluation that
keeps its trained epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detr_core.checkpoint import read_checkpoint
from detr_core.training import run as training
from detr_core.training.output_dir import locked_output_dir
from detr_core.training.run import TrainingError, train
from detr_core.training.run_log import append_record, reconcile_log
from tests.training.helpers import make_tiny_shapes, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(out: Path, text: str) -> None:
    (out / "log.jsonl").write_text(text)


def _epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]


def _line(epoch: int, minutes: float = 1.0) -> str:
    return json.dumps({"epoch": epoch, "train_minutes": minutes}) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_line(0) + _line(1), [0, 1, 2]),  # killed after the rename, before the append: the record is added
        (_line(0) + _line(1) + '{"epoch": 2, "tra', [0, 1, 2]),  # torn last line replaced by the record
        (_line(0) + _line(1) + _line(2), [0, 1, 2]),  # complete: untouched
        (_line(0) + _line(1) + _line(1) + _line(2) + _line(3), [0, 1, 2]),  # doubled and later epochs dropped
        ("", [2]),  # resumed into a folder without a log
    ],
)
def test_reconcile_makes_every_epoch_appear_once(tmp_path, text, expected):
    _write(tmp_path, text)
    records = reconcile_log(tmp_path, epoch=2, record={"epoch": 2, "train_minutes": 3.0})
    assert [r["epoch"] for r in records] == expected == _epochs(tmp_path)
    assert (tmp_path / "log.jsonl").read_text().endswith("\n") and not list(tmp_path.glob(".*.tmp"))


def test_reconcile_of_a_complete_log_does_not_rewrite_it(tmp_path):
    _write(tmp_path, _line(0) + _line(1))
    before = (tmp_path / "log.jsonl").stat().st_mtime_ns
    reconcile_log(tmp_path, epoch=1, record={"epoch": 1, "train_minutes": 9.0})
    assert (tmp_path / "log.jsonl").stat().st_mtime_ns == before


def test_failed_append_is_cut_back(tmp_path, monkeypatch):
    _write(tmp_path, _line(0))

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", no_space)
    with pytest.raises(OSError):
        append_record(tmp_path, {"epoch": 1})
    assert (tmp_path / "log.jsonl").read_text() == _line(0)


def test_lock_removes_orphaned_temps_but_not_other_files(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".checkpoint.pth.detrtool-{pid}-x1y2z3w4.tmp").write_bytes(b"\0" * 2_000_000)
    (tmp_path / f".log.jsonl.detrtool-{pid}-a1b2c3d4.tmp").write_text("x")
    (tmp_path / "notes.tmp").write_text("kept: not a detrtool temp")
    (tmp_path / ".notes.tmp").write_text("kept: no marker")
    (tmp_path / ".log.jsonl.a.tmp").write_text("kept: no marker (a user's name)")
    (tmp_path / f".config.yaml.detrtool-{os.getpid()}-a1b2c3d4.tmp").write_text("kept: a live process's temp")
    with caplog.at_level("INFO"), locked_output_dir(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".config.yaml.detrtool-{os.getpid()}-a1b2c3d4.tmp", ".detrtool-train.lock", ".log.jsonl.a.tmp",
        ".notes.tmp", "notes.tmp"]
    assert any("removed 2 temp file(s)" in r.getMessage() and "2.0 MB" in r.getMessage() for r in caplog.records)


def test_failed_evaluation_keeps_the_trained_epoch(tmp_path, monkeypatch):
    data = make_tiny_shapes(tmp_path / "shapes")

    def broken(*args, **kwargs):
        raise RuntimeError("evaluator exploded")

    monkeypatch.setattr(training, "_eval_record", broken)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="epoch 0: evaluation failed .*evaluator exploded.*saved in"):
        train(tiny_config(data, out, epochs=2))
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 0 and _epochs(out) == [0]
