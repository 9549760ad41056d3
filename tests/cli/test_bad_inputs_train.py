"""Bad input to ``detrtool train``, ``plot`` and ``demo``: one error line naming the option / file / key,
no traceback, no code run from a file, and an earlier run in the output folder left byte-for-byte as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli.bad_input import check_bad_input, run_cli, tmpfs
from tests.training.helpers import make_tiny_shapes

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--backbone", "small_cnn", "--hidden-dim", "32", "--nheads", "2", "--enc-layers", "1", "--dec-layers", "2",
        "--dim-feedforward", "64", "--num-queries", "5", "--dropout", "0", "--transforms", "shapes",
        "--image-size", "64", "--batch-size", "4", "--num-workers", "0", "--no-progress", "--epochs", "1"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return make_tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture
def previous(tmp_path) -> Path:
    """An output folder holding an earlier run (checkpoint, config, log) that a refused start must not touch."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pth").write_bytes(b"earlier checkpoint bytes")
    (out / "config.yaml").write_text("epochs: 2\n")
    (out / "log.jsonl").write_text('{"epoch": 0, "train_loss": 1.0}\n{"epoch": 1, "train_loss": 0.9}\n')
    return out


def _kept(out: Path) -> list[Path]:
    return [out / "checkpoint.pth", out / "config.yaml", out / "log.jsonl"]


def _train(shapes_root: Path, out: Path, *extra: object) -> list[object]:
    return ["train", "--coco-path", shapes_root, "--output-dir", out, *TINY, *extra]


# ------------------------------------------------------------------------------------------ options
OPTION_CASES = [
    ("eval every 0", ["--eval-every", "0"], ["--eval-every"]),
    ("no queries", ["--num-queries", "0"], ["--num-queries"]),
    ("no decoder layers", ["--dec-layers", "0"], ["--dec-layers"]),
    ("negative lr", ["--lr", "-1e-4"], ["--lr"]),
    ("nan lr", ["--lr", "nan"], ["--lr", "finite"]),
    ("dropout of 1", ["--dropout", "1"], ["--dropout"]),
    ("eos coef 0", ["--eos-coef", "0"], ["--eos-coef"]),
    ("batch of zero", ["--batch-size", "0"], ["--batch-size"]),
    ("zero epochs", ["--epochs", "0"], ["--epochs"]),
    ("negative workers", ["--num-workers", "-1"], ["--num-workers"]),
    ("zero processes", ["--nproc", "0"], ["--nproc"]),
    ("negative clipping", ["--clip-max-norm", "-1"], ["--clip-max-norm"]),
    ("lr not a number", ["--lr", "fast"], ["--lr"]),
]


@pytest.mark.parametrize("extra, names", [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES])
def test_bad_option_is_a_usage_error(shapes_root, previous, extra, names):
    check_bad_input(_train(shapes_root, previous, *extra), names=names, exit_code=2, protect=_kept(previous))


def test_heads_not_dividing_the_width(shapes_root, previous):
    check_bad_input(_train(shapes_root, previous, "--hidden-dim", "30", "--nheads", "4"),
                    names=["hidden_dim 30", "nheads 4"], protect=_kept(previous))


# --------------------------------------------------------------------------------------------- YAML
YAML_CASES = [
    ("string for a number", "lr: fast\n", ["lr", "must be a number", "'fast'"]),
    ("list for an integer", "epochs: [1, 2]\n", ["epochs", "must be an integer"]),
    ("null for an integer", "epochs: null\n", ["epochs", "null"]),
    ("eval every 0", "eval_every: 0\n", ["eval_every", "out of range", ">= 1"]),
    ("no queries in the model section", "model:\n  num_queries: 0\n", ["num_queries", "out of range"]),
    ("inf dropout", "model:\n  dropout: .inf\n", ["dropout", "must be a number"]),
    ("a string for a flag", "cache_images: maybe\n", ["cache_images", "true or false"]),
    ("section not a mapping", "model: 5\n", ["model", "mapping"]),
    ("unknown schedule", "lr_schedule: linear\n", ["lr_schedule", "step, cosine", "'linear'"]),
    ("a number for a path", "data:\n  coco_path: 5\n", ["coco_path", "must be a string"]),
    ("unknown key", "epochz: 3\n", ["unknown setting 'epochz'"]),
    ("not a mapping", "- 1\n- 2\n", ["must hold a mapping"]),
    ("broken YAML", "epochs: [1\n", ["not a readable YAML config"]),
    ("python tag", "epochs: !!python/object/apply:os.system ['touch MARKER']\n", ["not a readable YAML config", "python"]),
]


@pytest.mark.parametrize("text, names", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_bad_yaml_is_one_line_naming_file_and_key(shapes_root, previous, tmp_path, text, names):
    marker = tmp_path / "marker"
    settings = tmp_path / "settings.yaml"
    settings.write_text(text.replace("MARKER", str(marker)))
    check_bad_input(_train(shapes_root, previous, "--config", settings), names=[str(settings), *names],
                    protect=_kept(previous))
    assert not marker.exists()


def test_binary_yaml_is_one_line(shapes_root, previous, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_bytes(bytes(range(256)) * 4)
    check_bad_input(_train(shapes_root, previous, "--config", settings), names=[str(settings)],
                    protect=_kept(previous))


# -------------------------------------------------------------------------------------- weight files
class _Payload:
    """Pickles as a call to os.system: loading it unsafely would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_file(kind: str, folder: Path, marker: Path) -> Path:
    path = folder / f"{kind}.pth"
    if kind == "text":
        path.write_text("not a pickle at all")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "payload":
        torch.save({"model": {"w": torch.zeros(2)}, "x": _Payload(marker)}, path)
    elif kind == "wrong keys":
        torch.save({"conv.weight": torch.zeros(2, 3, 3, 3)}, path)
    elif kind == "wrong shapes":
        from detr_core.models.small_backbone import SmallCNN

        state = SmallCNN(norm="batch").state_dict()
        torch.save({k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.ndim == 4 else v for k, v in state.items()},
                   path)
    elif kind == "integer weights":
        from detr_core.models.small_backbone import SmallCNN

        state = SmallCNN(norm="batch").state_dict()
        torch.save({k: v.to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}, path)
    elif kind == "a list":
        torch.save([torch.zeros(2)], path)
    return path


WEIGHT_CASES = [(option, kind) for option in ("--backbone-weights", "--resume", "--init")
                for kind in ("text", "truncated", "payload", "wrong keys", "wrong shapes", "integer weights", "a list")
                if kind not in ("wrong shapes", "integer weights") or option == "--backbone-weights"]  # backbone


@pytest.mark.parametrize(("option", "kind"), WEIGHT_CASES)
def test_bad_weight_files_are_one_line_and_never_run(shapes_root, previous, tmp_path, option, kind):
    marker = tmp_path / "marker"
    path = _bad_file(kind, tmp_path, marker)
    check_bad_input(_train(shapes_root, previous, option, path), names=[str(path)], protect=_kept(previous))
    assert not marker.exists()


def test_checkpoint_with_a_bad_stored_config(shapes_root, previous, tmp_path, tiny_checkpoint_path):
    ckpt = torch.load(tiny_checkpoint_path, weights_only=True)
    path = tmp_path / "stored.pth"
    torch.save({**ckpt, "config": {"model": {"num_queries": 0}, "run": {"eval_every": 1}}}, path)
    check_bad_input(_train(shapes_root, previous, "--resume", path), names=[str(path), "num_queries", "out of range"],
                    protect=_kept(previous))


# ------------------------------------------------------------------------------------- output folder
_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("nproc", ["1", "2"])
def test_locked_output_dir_refuses_naming_folder_and_pid(shapes_root, previous, nproc):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(previous / ".detrtool-train.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        check_bad_input(_train(shapes_root, previous, "--nproc", nproc),
                        names=[str(previous), f"pid {holder.pid}", "in use"], protect=_kept(previous))
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_by_a_killed_holder(shapes_root, previous, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(previous / ".detrtool-train.lock")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    orphan = previous / f".checkpoint.pth.detrtool-{holder.pid}-abc12345.tmp"  # a temp the killed run left
    orphan.write_bytes(b"\0" * 1000)
    result = run_cli(_train(shapes_root, previous, "--eval-every", "5"))
    assert result.exit_code == 0, result.output
    assert not orphan.exists()


def test_read_only_output_dir(shapes_root, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as out:
        check_bad_input(_train(shapes_root, out), names=["--output-dir", str(out), "read-only"])


def test_full_disk_leaves_no_partial_file(shapes_root, tmp_path):
    with tmpfs(tmp_path / "full", size="1m") as out:
        check_bad_input(_train(shapes_root, out), names=[str(out / "checkpoint.pth"), "cannot write", "MB free"])
        names = sorted(p.name for p in out.iterdir())
        assert names == [".detrtool-train.lock", "config.yaml"], names
        assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1  # whole, not torn


def test_divergence_is_the_documented_line(shapes_root, tmp_path):
    out = tmp_path / "diverged"
    check_bad_input(_train(shapes_root, out, "--lr", "1e30", "--lr-backbone", "1e30", "--epochs", "2"),
                    names=["loss is not finite", "last good checkpoint", "left untouched"])
    assert not (out / "checkpoint.pth").exists() and not list(out.glob(".*.tmp"))


# --------------------------------------------------------------------------------------------- plot
def test_plot_of_a_garbage_line_names_file_and_line(previous):
    log = previous / "log.jsonl"
    log.write_text('{"epoch": 0, "train_loss": 1.0}\nnot json\n{"epoch": 2, "train_loss": 0.8}\n')
    check_bad_input(["plot", previous], names=[f"{log}:2"], protect=[previous])


def test_plot_of_a_binary_log(previous):
    (previous / "log.jsonl").write_bytes(bytes(range(256)))
    check_bad_input(["plot", previous], names=[str(previous / "log.jsonl")], protect=[previous])


def test_plot_of_a_missing_folder(tmp_path):
    check_bad_input(["plot", tmp_path / "nowhere"], names=["nowhere"], exit_code=2)


def test_plot_skips_a_torn_last_line(previous, caplog):
    log = previous / "log.jsonl"
    log.write_text('{"epoch": 0, "train_loss": 1.0}\n{"epoch": 1, "train_loss": 0.9}\n{"epoch": 2, "trai')
    result = run_cli(["plot", previous])
    assert result.exit_code == 0, result.output
    assert any("torn last line" in r.getMessage() for r in caplog.records)
    assert (previous / "loss.png").read_bytes()[:4] == b"\x89PNG" and not list(previous.glob(".*.tmp"))


# --------------------------------------------------------------------------------------------- demo
@pytest.mark.parametrize(("extra", "names"), [(["--epochs", "0"], ["--epochs"]), (["--runs", "0"], ["--runs"])])
def test_demo_bad_options(tmp_path, extra, names):
    check_bad_input(["demo", "--output-dir", tmp_path / "demo", *extra], names=names, exit_code=2)


@pytest.mark.parametrize(("field", "value", "weights"), [
    ("num_queries", 60000, "query_embed.weight rows: 5"), ("enc_layers", 100, "encoder layers: 1"),
    ("hidden_dim", 8192, "query_embed.weight columns: 32"), ("num_classes", 7, "class_embed.weight rows"),
])
def test_stored_config_disagreeing_with_its_weights(shapes_root, previous, tmp_path, field, value, weights):
    """A detrtool checkpoint whose stored model config gives another size than its weights: one line, before
    a model of the config's size is built (num_queries 10**9 tried to allocate 256 GB; such a value is now out
    of OPTION_RANGES too, so the sizes here are within range and only disagree with the weights)."""
    from detr_core.checkpoint import save_checkpoint
    from detr_core.config import ModelConfig
    from detr_core.registry import build_model

    config = ModelConfig(backbone="small_cnn", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=2,
                         dim_feedforward=64, num_queries=5, num_classes=2)
    path = save_checkpoint(tmp_path / "odd.pth", {"model": build_model(config).state_dict(), "config": {
        "model": {**vars(config), field: value, "class_names": []}}})
    for command in (["convert", path, "--to", "safetensors", "--output", tmp_path / "w" / "m.safetensors"],
                    ["export", "--resume", path, "--format", "onnx", "--output", tmp_path / "m.onnx"],
                    _train(shapes_root, previous, "--resume", path), _train(shapes_root, previous, "--init", path)):
        check_bad_input(command, names=[str(path), f"{field} {value} disagrees with the weights", weights],
                        protect=_kept(previous))


def test_cpu_bf16_on_a_cpu_without_it_is_one_line(shapes_root, previous, monkeypatch):
    from detr_core.hardware import Capability, CpuInfo
    from detr_core.training import engine

    faked = Capability(CpuInfo(name="AMD EPYC 7B13 (faked)", arch="x86_64", flags=frozenset({"avx2", "fma"})),
                       probes={})
    monkeypatch.setattr(engine, "detect", lambda: faked)
    check_bad_input(_train(shapes_root, previous, "--amp", "bf16", "--device", "cpu"),
                    names=["--amp bf16", "emulated", "AVX512-BF16", "--amp none"], protect=_kept(previous))
