"""Caches detrtool fills (the shapes dataset, bench's artifacts): an entry it did not make whole is refused in
one line naming it, never used and never removed."""

from __future__ import annotations

from detr_core.data.shapes import ShapesParams, default_shapes_root
from tests.cli.bad_input import check_bad_input


def test_train_refuses_a_shapes_cache_folder_it_did_not_finish(tmp_path, monkeypatch):
    monkeypatch.setenv("DETRTOOL_CACHE", str(tmp_path / "cache"))
    root = default_shapes_root(ShapesParams())  # the default's folder: half a dataset, no completion marker
    (root / "train2017").mkdir(parents=True)
    (root / "train2017" / "000000000001.png").write_bytes(b"not finished")
    check_bad_input(["train", "--output-dir", tmp_path / "run", "--epochs", "1"],
                    names=[str(root), "completion marker", "will not remove it"], protect=[root])


def test_bench_refuses_a_cache_entry_without_its_record(tiny_checkpoint_path, tmp_path):
    from bench.artifacts import ArtifactCache
    from detr_core import load_checkpoint

    cache = ArtifactCache(tmp_path / "cache", load_checkpoint(tiny_checkpoint_path, nheads=4), (128, 128), 1)
    planted = tmp_path / "cache" / cache.export_key("torch-export")
    planted.mkdir(parents=True)
    (planted / "model.pt2").write_bytes(b"someone else's file")
    from tests.training.helpers import make_tiny_shapes

    shapes = make_tiny_shapes(tmp_path / "shapes")
    result = check_bad_input(["bench", "--resume", tiny_checkpoint_path, "--nheads", "4", "--coco-path", shapes,
                              "--input-size", "128x128", "--warmup", "0", "--runs", "1", "--no-padded-batch",
                              "--peak-size", "0", "--formats", "torch-export", "--output-dir", tmp_path / "out",
                              "--cache-dir", tmp_path / "cache"],
                             names=["torch-export (cpu) failed", str(planted), "neither used nor removed"],
                             protect=[planted])
    assert "| torch-export | cpu | fp32 | ❌ |" in result.output
