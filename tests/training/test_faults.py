"""Fault tests: ``kill -9`` a training run at every phase of an epoch, resume it, and demand a complete
``log.jsonl`` (every epoch once), the killed run's temp files gone, and final weights bit-identical to an
uninterrupted run.

The run is a subprocess whose functions are wrapped (not the product code: only this test's child
script) to print ``PHASE <name>`` and sleep at one exact point of epoch 1; the test kills it there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detr_core.checkpoint import read_checkpoint
from detr_core.training.run import train
from detr_core.training.train_config import resolve_train_config
from tests.training.helpers import make_tiny_shapes, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"epochs": 3, "lr_schedule": "cosine", "warmup_steps": 2, "seed": 5}

_CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from detr_core.atomic import atomic_write
from detr_core.training import engine, run
from tests.training.helpers import tiny_config

data, out, phase, settings = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
calls = {"step": 0, "eval": 0}

def pause(name):
    if name == phase:
        print("PHASE", name, flush=True)
        time.sleep(600)

real_step, real_eval, real_save_epoch = engine._backward_step, run._eval_record, run.save_epoch

def step(*args, **kwargs):  # 2 steps per epoch: the 4th is epoch 1's second step
    calls["step"] += 1
    if calls["step"] == 4:
        pause("train")
    return real_step(*args, **kwargs)

def evaluate(*args, **kwargs):
    calls["eval"] += 1
    if calls["eval"] == 2:
        pause("eval")
    return real_eval(*args, **kwargs)

def save_checkpoint(path, payload):  # epoch 1's file fully written to its temp, not yet renamed
    def write(handle):
        torch.save(payload, handle)
        if payload["epoch"] == 1:
            pause("save")
    atomic_write(path, write)

def save_epoch(trainer, out, epoch, record):
    real_save_epoch(trainer, out, epoch, record)
    if epoch == 1:
        pause("renamed")

def append_record(out, record):
    line = json.dumps(record) + "\\n"
    with open(out / "log.jsonl", "a") as handle:
        if record["epoch"] == 1 and phase == "append":
            handle.write(line[: len(line) // 2])
            handle.flush()
            pause("append")
        handle.write(line)

engine._backward_step, run._eval_record, run.save_epoch = step, evaluate, save_epoch
run.save_checkpoint, run.append_record = save_checkpoint, append_record
run.train(tiny_config(data, out, **settings))
print("FINISHED", flush=True)
"""

PHASES = ("train", "eval", "save", "renamed", "append")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return make_tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def reference(shapes_root, tmp_path_factory) -> Path:
    """The uninterrupted run, on one thread like the killed children (module fixtures start before the
    function-scoped ``one_thread``, and the float rounding of the sums depends on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(tiny_config(shapes_root, tmp_path_factory.mktemp("full") / "run", **SETTINGS))
    finally:
        torch.set_num_threads(threads)


def _kill_at(phase: str, data: Path, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(data), str(out), phase, json.dumps(SETTINGS)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("PHASE"):
                break
        assert lines and lines[-1].startswith(f"PHASE {phase}"), "".join(lines)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _epochs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("phase", PHASES)
def test_kill_at_every_phase_then_resume_is_complete_and_exact(shapes_root, reference, tmp_path, phase):
    out = tmp_path / "run"
    _kill_at(phase, shapes_root, out)
    before = (out / "log.jsonl").read_text()
    assert bool(list(out.glob(".checkpoint.pth.*.tmp"))) == (phase == "save")
    tic = time.perf_counter()
    train(resolve_train_config({"resume": str(out / "checkpoint.pth"), "progress": False}))
    resume_seconds = time.perf_counter() - tic

    log = _epochs(out / "log.jsonl")
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert (out / "log.jsonl").read_text().startswith(before.splitlines(keepends=True)[0])  # epoch 0 kept as written
    minutes = [r["train_minutes"] for r in log]
    assert minutes == sorted(minutes) and minutes[0] > 0
    assert (minutes[2] - minutes[1]) * 60 <= resume_seconds  # the dead time after the kill is not counted
    assert not list(out.glob(".*.tmp"))
    full, cut = read_checkpoint(reference / "checkpoint.pth")["model"], read_checkpoint(out / "checkpoint.pth")["model"]
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert [r["train_loss"] for r in log] == [r["train_loss"] for r in _epochs(reference / "log.jsonl")]
