"""Faults during ``detrtool export``: a ``kill -9`` while the artifact is being written and validated, and
a full disk. The previous artifact at ``--output`` stays byte-identical and loadable; no partial file is
left at the output path; a temp file orphaned by the kill is removed by the next export to that path."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detr_core.atomic import remove_orphans
from exporters import load_runtime
from tests.cli.bad_input import check_bad_input, fill, tmpfs
from tests.exporters.crafted import ROOT

FORMATS = {".onnx": ["--format", "onnx", "--exporter", "legacy", "--opset", "17"],
           ".ts": ["--format", "torchscript"], ".pt2": ["--format", "torch-export"]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_args(checkpoint: Path, suffix: str, output: Path, *extra: str) -> list[str]:
    return ["export", "--resume", str(checkpoint), *FORMATS[suffix], "--input-size", "64x96",
            "--output", str(output), *extra]


def _temp_files(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f".{output.name}.*"))


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", "from cli.main import cli; cli()", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_each_while_writing(processes: dict[str, subprocess.Popen], outputs: dict[str, Path],
                             timeout: float = 120.0) -> dict[str, bool]:
    """SIGKILL each process as soon as its temp file for its output exists (all watched at once); whether
    each was killed so (False: it ended first)."""
    killed = dict.fromkeys(processes, False)
    pending = dict(processes)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, process in list(pending.items()):
            if _temp_files(outputs[key]):
                process.send_signal(signal.SIGKILL)
                killed[key] = True
            if killed[key] or process.poll() is not None:
                process.wait()
                del pending[key]
        time.sleep(0.001)
    for process in pending.values():
        process.kill()
        process.wait()
    return killed


def test_kill_during_export_leaves_the_previous_artifact(small_checkpoint, small_artifacts, small_images, tmp_path):
    """All three formats at once (separate processes), each killed while its artifact is being written and
    validated: the artifact that was at --output is intact and loads."""
    outputs = {s: shutil.copy(small_artifacts[s], tmp_path / f"model{s}") for s in FORMATS}
    before = {s: _sha(p) for s, p in outputs.items()}
    processes = {s: _start(_export_args(small_checkpoint, s, outputs[s], "--validate-images", str(small_images)))
                 for s in FORMATS}
    killed = _kill_each_while_writing(processes, outputs)
    assert all(killed.values()), f"an export finished before it could be killed: {killed}"
    for suffix, output in outputs.items():
        assert _sha(output) == before[suffix], f"{output} changed under a kill"
        assert load_runtime(output).format
        orphans = _temp_files(output)
        assert orphans and remove_orphans(output) == orphans  # the killed process's temp file goes next time
        assert not _temp_files(output)


@pytest.mark.parametrize("suffix", list(FORMATS))
def test_full_disk_fails_in_one_line_and_keeps_the_previous_file(small_checkpoint, tmp_path, suffix):
    with tmpfs(tmp_path / "disk", size="2m") as disk:
        output = disk / f"model{suffix}"
        output.write_bytes(b"previous artifact")
        fill(disk)
        check_bad_input(_export_args(small_checkpoint, suffix, output, "--no-validate"),
                        names=[str(output), "No space left on device", "untouched"], protect=[output])
        assert output.read_bytes() == b"previous artifact"
        assert not _temp_files(output)


@pytest.mark.parametrize("fault", ["validation fails", "Ctrl-C during validation"])
def test_refused_export_leaves_the_previous_file(small_checkpoint, small_images, tmp_path, monkeypatch, fault):
    from detr_core import load_checkpoint
    from exporters import export
    from exporters.validate import ValidationError

    output = tmp_path / "model.onnx"
    output.write_bytes(b"previous artifact")
    kwargs = {"input_size": (64, 96), "exporter": "legacy", "opset": 17, "validate_images": small_images}
    if fault == "validation fails":
        with pytest.raises(ValidationError, match="model.onnx: onnx artifact differs from eager .*not written"):
            export(load_checkpoint(small_checkpoint), "onnx", output, tolerance=-1.0, **kwargs)
    else:
        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr("exporters.validate.validate_artifact", interrupt)
        with pytest.raises(KeyboardInterrupt):
            export(load_checkpoint(small_checkpoint), "onnx", output, **kwargs)
    assert output.read_bytes() == b"previous artifact" and not _temp_files(output)
