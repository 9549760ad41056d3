"""No code from a file ever runs: TorchScript and ``.pt2`` programs that write a file through
``aten::from_file`` (in ``forward`` or in ``__setstate__``; refused by the op policy), hostile ``.pt2``
archives (payload in the weights, in the sample inputs, in the guards), one planted in bench's artifact cache, checkpoints with a ``__reduce__`` payload through
every command that loads one, a TorchScript ``data.pkl`` with a GLOBAL to ``exec``, and ONNX external data
that points outside the file. Every payload writes a marker file; where torch itself would run it, the
test first proves the payload live by loading it with the unguarded library call."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from bench.artifacts import ArtifactCache
from detr_core import CheckpointError, load_checkpoint
from detr_core.data.shapes import ShapesParams, generate_shapes
from exporters import ArtifactError, load_runtime
from exporters.pt2_safety import UnsafeArtifactError
from tests.cli.bad_input import check_bad_input, run_cli
from tests.exporters import crafted
from tests.exporters.conftest import SMALL_CANVAS

PT2_PAYLOADS = {
    "weights": (crafted.pickle_weight, "data/weights/weight_0"),
    "sample-inputs": (crafted.poison_sample_inputs, "data/sample_inputs/model.pt"),
    "guards": (crafted.add_guard, "models/model.json"),
}


def _unguarded_load(path: Path) -> None:
    """What ``torch.export.load`` + running the module does with the file (no detrtool checks)."""
    try:
        program = torch.export.load(str(path))
        program.module()(*program.example_inputs[0])
    except Exception:  # noqa: BLE001 - the payloads break the program after running; that is fine here
        pass


@pytest.fixture
def predictions(tmp_path) -> Path:
    """An earlier predict run's output folder, which a refused command must leave as it was."""
    folder = tmp_path / "predictions"
    folder.mkdir()
    (folder / "img0.png").write_bytes(b"earlier result")
    return folder


@pytest.mark.parametrize("where", list(PT2_PAYLOADS))
def test_pt2_payload_never_runs(small_artifacts, small_images, predictions, tmp_path, where):
    edit, member = PT2_PAYLOADS[where]
    marker = tmp_path / "marker"
    bad = crafted.rewrite_pt2(small_artifacts[".pt2"], tmp_path / "bad.pt2", lambda files: edit(files, marker))
    _unguarded_load(bad)
    assert marker.exists(), "the crafted file must carry a live payload"
    marker.unlink()
    with pytest.raises(UnsafeArtifactError, match=f"bad.pt2: refused to load: archive member .*{member}"):
        load_runtime(bad)
    check_bad_input(["predict", small_images, "--model", bad, "--output-dir", predictions],
                    names=["bad.pt2", member, "refused"], protect=[predictions])
    assert not marker.exists()


FILE_WRITERS = {
    "ts-forward": (".ts", lambda src, dst, victim: crafted.file_writing_torchscript(src, dst, victim),
                   "method forward calls aten::from_file"),
    "ts-setstate": (".ts", lambda src, dst, victim: crafted.file_writing_torchscript(src, dst, victim,
                                                                                     in_setstate=True),
                    "defines __setstate__"),
    "pt2": (".pt2", crafted.file_writing_program, "calls 'torch.ops.aten.from_file.default'"),
}


def _unguarded_run(path: Path) -> None:
    """What the library does with the file without detrtool's checks: load it and run it once."""
    if path.suffix == ".pt2":
        _unguarded_load(path)
        return
    module = torch.jit.load(str(path))
    h, w = SMALL_CANVAS
    module(torch.zeros(1, 3, h, w), torch.zeros(1, h, w, dtype=torch.bool))


@pytest.mark.parametrize("kind", list(FILE_WRITERS))
def test_artifact_program_calling_from_file_never_runs(small_artifacts, small_images, predictions, tmp_path, kind):
    """The red team's payload: a program exported by detrtool itself (valid hash) that maps a file read-write
    with ``aten::from_file`` and overwrites it; refused by the op policy before any of its code runs."""
    suffix, build, why = FILE_WRITERS[kind]
    victim = tmp_path / "victim.txt"
    victim.write_text("original victim content")
    bad = build(small_artifacts[suffix], tmp_path / f"evil{suffix}", victim)
    _unguarded_run(bad)
    assert victim.read_text().startswith("XXXXXXXX"), "the crafted file must carry a live payload"
    victim.write_text("original victim content")
    with pytest.raises(ArtifactError, match=f"evil\\{suffix}: refused to load: .*{re.escape(why)}") as info:
        load_runtime(bad)
    assert "\n" not in str(info.value)
    check_bad_input(["predict", small_images, "--model", bad, "--output-dir", predictions],
                    names=[f"evil{suffix}", "refused", "from_file" if kind != "ts-setstate" else "__setstate__"],
                    protect=[predictions, victim])
    assert victim.read_text() == "original victim content"


@pytest.mark.parametrize("edit, why", [
    (crafted.call_os_system, "calls 'torch.os.system'"),
    (lambda files, marker: files.__setitem__("data/aotinductor/model/model.so", b"\x7fELF"), "aotinductor"),
    (lambda files, marker: files.__setitem__("data/constants/opaque_obj_0", crafted.pickle_global(marker)),
     "opaque_obj_0"),
])
def test_pt2_foreign_members_and_targets_are_refused(small_artifacts, tmp_path, edit, why):
    marker = tmp_path / "marker"
    bad = crafted.rewrite_pt2(small_artifacts[".pt2"], tmp_path / "odd.pt2", lambda files: edit(files, marker))
    with pytest.raises(UnsafeArtifactError, match=why) as info:
        load_runtime(bad)
    assert "\n" not in str(info.value) and not marker.exists()


def test_pt2_planted_in_bench_cache_is_a_failed_row(small_checkpoint, small_artifacts, tmp_path):
    marker = tmp_path / "marker"
    shapes = generate_shapes(tmp_path / "shapes", ShapesParams(seed=1, image_size=64, train_count=1, val_count=2),
                             progress=False)
    cache = ArtifactCache(tmp_path / "cache", load_checkpoint(small_checkpoint), SMALL_CANVAS, 1)
    folder = tmp_path / "cache" / cache.export_key("torch-export")
    folder.mkdir(parents=True)
    crafted.rewrite_pt2(small_artifacts[".pt2"], folder / "model.pt2", lambda files: crafted.pickle_weight(files, marker))
    (folder / "export.json").write_text(json.dumps({"seconds": 1.0, "file": "model.pt2"}))
    result = run_cli(["bench", "--resume", small_checkpoint, "--coco-path", shapes, "--formats", "torch-export",
                      "--input-size", f"{SMALL_CANVAS[0]}x{SMALL_CANVAS[1]}", "--warmup", "0", "--runs", "1",
                      "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 1, result.output
    assert "| torch-export | cpu | fp32 | ❌ |" in result.output
    assert "refused to load: archive member archive/data/weights/weight_0" in result.output
    assert "Traceback" not in result.output and not marker.exists()


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("coco"), ShapesParams(seed=2, image_size=64, train_count=2,
                                                                         val_count=2), progress=False)


CHECKPOINT_PATHS = {
    "eval --resume": lambda ckpt, coco, out: ["eval", "--resume", ckpt, "--coco-path", coco, "--output-dir", out],
    "export --resume": lambda ckpt, coco, out: ["export", "--resume", ckpt, "--format", "onnx", "--output",
                                                out / "m.onnx"],
    "predict --resume": lambda ckpt, coco, out: ["predict", coco / "val2017", "--resume", ckpt, "--output-dir", out],
    "bench --resume": lambda ckpt, coco, out: ["bench", "--resume", ckpt, "--coco-path", coco, "--output-dir", out],
    "train --resume": lambda ckpt, coco, out: ["train", "--coco-path", coco, "--output-dir", out, "--resume", ckpt],
    "train --init": lambda ckpt, coco, out: ["train", "--coco-path", coco, "--output-dir", out, "--init", ckpt],
    "train --frozen-weights": lambda ckpt, coco, out: ["train", "--coco-path", coco, "--output-dir", out,
                                                       "--frozen-weights", ckpt],
    "train --backbone-weights": lambda ckpt, coco, out: ["train", "--coco-path", coco, "--output-dir", out,
                                                         "--backbone", "resnet18", "--backbone-weights", ckpt],
}


@pytest.fixture
def payload_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A checkpoint whose pickle runs ``exec`` (writing a marker) when unpickled without weights_only."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": crafted.Payload(marker)}, path)
    return path, marker


def test_checkpoint_payload_is_refused_by_the_loader(payload_checkpoint):
    path, marker = payload_checkpoint
    with pytest.raises(CheckpointError, match="evil.pth: not a readable PyTorch checkpoint .*weights-only"):
        load_checkpoint(path)
    torch.load(path, weights_only=False)  # the unguarded load runs it: the payload is live
    assert marker.exists()


@pytest.mark.parametrize("command", list(CHECKPOINT_PATHS))
def test_checkpoint_payload_never_runs(payload_checkpoint, tiny_coco, tmp_path, command):
    path, marker = payload_checkpoint
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("earlier output")
    # train's run lock (.detrtool-train.lock) may stay in the folder; the earlier output must not change
    protect = [out / "earlier.txt"] if command.startswith("train") else [out]
    check_bad_input(CHECKPOINT_PATHS[command](path, tiny_coco, out), names=["evil.pth"], protect=protect)
    assert not marker.exists()


def test_torchscript_data_pkl_global_never_runs(small_artifacts, small_images, predictions, tmp_path):
    marker = tmp_path / "marker"

    def poison(files: dict[str, bytes]) -> None:
        files[next(n for n in files if n.endswith("/data.pkl"))] = crafted.pickle_global(marker)

    bad = crafted.rewrite_zip(small_artifacts[".ts"], tmp_path / "bad.ts", poison)
    with pytest.raises(ArtifactError, match="bad.ts: cannot load the TorchScript module") as info:
        load_runtime(bad)
    assert "\n" not in str(info.value)
    check_bad_input(["predict", small_images, "--model", bad, "--output-dir", predictions],
                    names=["bad.ts", "TorchScript"], protect=[predictions])
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_onnx_external_data_outside_the_file_is_never_read(small_artifacts, small_images, predictions, tmp_path,
                                                           kind):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\1" * 4096)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "link.bin").symlink_to(secret)
    location = {"parent": "../secret.bin", "absolute": str(secret), "symlink": "link.bin"}[kind]
    bad = crafted.with_external_data(small_artifacts[".onnx"], folder / "ext.onnx", location)
    before = secret.stat().st_atime_ns
    with pytest.raises(ArtifactError, match="is stored outside the file") as info:
        load_runtime(bad)
    assert "\n" not in str(info.value)
    check_bad_input(["predict", small_images, "--model", bad, "--output-dir", predictions],
                    names=["ext.onnx", location], protect=[predictions])
    assert secret.stat().st_atime_ns == before


def test_clean_copies_still_load(small_artifacts, tmp_path):
    """The crafting tools themselves keep a clean file loadable (the refusals above are the payloads')."""
    clean = crafted.rewrite_pt2(small_artifacts[".pt2"], tmp_path / "clean.pt2", lambda files: None)
    assert load_runtime(clean).format == "torch-export"
    clean_ts = crafted.rewrite_zip(small_artifacts[".ts"], tmp_path / "clean.ts", lambda files: None)
    assert load_runtime(clean_ts).format == "torchscript"
    shutil.copy(small_artifacts[".onnx"], tmp_path / "copy.onnx")
    assert load_runtime(tmp_path / "copy.onnx").format == "onnx"
