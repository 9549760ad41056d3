"""The write rule, for ``detrtool train``: a symbolic link planted at a path a run writes, appends to or locks
is refused in one line naming the link (its target byte-identical), and a run removes only the temp files it
can prove are detrtool's (the marker and a dead pid), never a user's ``.*.tmp``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.bad_input import check_bad_input, run_cli, tree_digest
from tests.training.helpers import make_tiny_shapes

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--backbone", "small_cnn", "--hidden-dim", "32", "--nheads", "2", "--enc-layers", "1", "--dec-layers", "2",
        "--dim-feedforward", "64", "--num-queries", "5", "--dropout", "0", "--transforms", "shapes",
        "--image-size", "64", "--batch-size", "4", "--num-workers", "0", "--no-progress", "--eval-every", "5"]
LINK_LINE = "is a symbolic link: detrtool does not write through links"


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return make_tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory) -> Path:
    """A finished one-epoch run (checkpoint.pth, config.yaml, log.jsonl) to resume or to plant links in."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli(_train(shapes_root, out, "--epochs", "1"))
    assert result.exit_code == 0, result.output
    return out


def _train(shapes_root: Path, out: Path, *extra: object) -> list[object]:
    return ["train", "--coco-path", shapes_root, "--output-dir", out, *TINY, *extra]


def _victim(tmp_path: Path, text: str = "someone else's file\n") -> Path:
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text(text)
    return victim


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_linked_lock_file_is_refused_and_its_target_kept(shapes_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    victim = _victim(tmp_path)
    (out / ".detrtool-train.lock").symlink_to(victim)
    check_bad_input(_train(shapes_root, out, "--epochs", "1"), names=[str(out / ".detrtool-train.lock"), LINK_LINE],
                    protect=[victim.parent])
    assert not (out / "checkpoint.pth").exists()


def test_resume_refuses_a_linked_log_and_keeps_its_target(shapes_root, trained, tmp_path):
    """The link points at a copy of the run's own log (so nothing needs repairing): the old code appended
    epoch 1 to that other file."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    victim = _victim(tmp_path, (out / "log.jsonl").read_text())
    (out / "log.jsonl").unlink()
    (out / "log.jsonl").symlink_to(victim)
    check_bad_input(_train(shapes_root, out, "--epochs", "2", "--resume", out / "checkpoint.pth"),
                    names=[str(out / "log.jsonl"), LINK_LINE], protect=[victim.parent, out / "checkpoint.pth"])


@pytest.mark.parametrize("name", ["checkpoint.pth", "config.yaml", "log.jsonl"])
def test_a_link_at_a_run_file_is_refused_before_training(shapes_root, tmp_path, name):
    out = tmp_path / "run"
    out.mkdir()
    victim = _victim(tmp_path)
    (out / name).symlink_to(victim)
    check_bad_input(_train(shapes_root, out, "--epochs", "1"), names=[str(out / name), LINK_LINE],
                    protect=[victim.parent])
    assert (out / name).is_symlink()


def test_train_keeps_user_tmp_files_and_removes_only_dead_marked_temps(shapes_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    user = [out / ".notes.tmp", out / ".checkpoint.pth.abc123.tmp", out / ".x.detrtool-notapid-abcdefgh.tmp"]
    for k, path in enumerate(user):
        path.write_text(f"the user's own file {k}\n")
    dead = out / f".checkpoint.pth.detrtool-{_dead_pid()}-abcd1234.tmp"
    dead.write_bytes(b"\0" * 1000)
    stage = out / f".train2017.detrtool-{_dead_pid()}-abcd1234.tmp"
    (stage / "new").mkdir(parents=True)
    live = out / f".log.jsonl.detrtool-{os.getppid()}-abcd1234.tmp"  # a live process's temp (our parent)
    live.write_text("in use")
    kept = {str(p): tree_digest(p) for p in [*user, live]}
    result = run_cli(_train(shapes_root, out, "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert {str(p): tree_digest(p) for p in [*user, live]} == kept
    assert not dead.exists() and not stage.exists()


@pytest.mark.parametrize("option", ["--init", "--frozen-weights"])
def test_a_run_never_replaces_the_weights_it_starts_from(shapes_root, trained, tmp_path, option):
    """``--init OUT/checkpoint.pth --output-dir OUT``: epoch 0's checkpoint would replace the weights the run
    was started from (``--resume`` is meant to be replaced; these are not)."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    check_bad_input(_train(shapes_root, out, "--epochs", "1", option, out / "checkpoint.pth"),
                    names=[option, str(out / "checkpoint.pth"), "which this run replaces"], protect=[out])
