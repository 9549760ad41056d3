"""``detrtool bench --class-map``: predictions are scored in the dataset's ids (unmapped dropped), on the
session-trained model whose detections are right: the identity map keeps AP, a swap of two classes
lowers it, and a map keeping one class scores only that class."""

from __future__ import annotations

import json

import pytest

from tests.cli.bad_input import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _bench_ap(trained_shapes, tmp_path, name, class_map=None) -> float:
    out = tmp_path / name
    args = ["bench", "--resume", trained_shapes.checkpoint, "--val-images", trained_shapes.images,
            "--val-ann", trained_shapes.annotations, "--formats", "eager", "--input-size", "96x96",
            "--warmup", "0", "--runs", "1", "--no-padded-batch", "--output-dir", out, "--cache-dir", tmp_path / "cache"]
    if class_map is not None:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(class_map))
        args += ["--class-map", path]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "bench.json").read_text())["rows"]
    return next(r["ap"] for r in rows if r["name"] == "eager")


def test_class_map_changes_what_is_scored(trained_shapes, tmp_path):
    names = ["circle", "square", "triangle", "star", "ellipse", "hexagon"]
    plain = _bench_ap(trained_shapes, tmp_path, "plain")
    identity = _bench_ap(trained_shapes, tmp_path, "identity", {n: n for n in names})
    swapped = _bench_ap(trained_shapes, tmp_path, "swapped",
                        {**{n: n for n in names}, "circle": "square", "square": "circle"})
    assert plain > 50 and identity == pytest.approx(plain, abs=1e-9)
    assert swapped < plain - 5  # circles scored as squares and squares as circles: wrong labels lose AP
