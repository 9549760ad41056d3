"""Shapes panoptic: COCO panoptic + instances files, things = the shapes, stuff = textured regions, determinism."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from detr_core.data import ShapesParams, default_shapes_root, ensure_default_shapes, generate_shapes
from detr_core.data.shapes_panoptic import (
    STUFF_CLASSES,
    is_thing_map,
    panoptic_categories,
    panoptic_segments,
    render_panoptic_image,
)
from detr_core.segmentation.panoptic_format import rgb_to_id
from tests.data import tree_bytes

SMALL = ShapesParams(seed=2, image_size=64, train_count=5, val_count=3)



def test_layout_categories_and_deterministic_bytes(tmp_path):
    a = tree_bytes(generate_shapes(tmp_path / "a", SMALL, progress=False, panoptic=True))
    assert a == tree_bytes(generate_shapes(tmp_path / "b", SMALL, progress=False, panoptic=True))
    other = tree_bytes(generate_shapes(tmp_path / "c", ShapesParams(**{**SMALL.__dict__, "seed": 3}), progress=False,
                                   panoptic=True))
    assert other.keys() == a.keys() and other != a
    for split, n in (("train", 5), ("val", 3)):
        assert sum(k.startswith(f"panoptic_{split}2017/") for k in a) == n
        assert sum(k.startswith(f"{split}2017/") for k in a) == n
    pan = json.loads(a["annotations/panoptic_val2017.json"])
    inst = json.loads(a["annotations/instances_val2017.json"])
    assert [(c["id"], c["name"], c["isthing"]) for c in pan["categories"]] == [
        *((i, n, 1) for i, n in enumerate(SMALL.classes)), (6, "sky", 0), (7, "ground", 0), (8, "wall", 0)]
    assert [c["id"] for c in inst["categories"]] == list(range(6))
    assert is_thing_map(SMALL) == {i: i < 6 for i in range(9)}
    things = [s for ann in pan["annotations"] for s in ann["segments_info"] if s["category_id"] < 6]
    assert len(things) == len(inst["annotations"])
    assert [(s["bbox"], s["area"]) for s in things] == [(a["bbox"], a["area"]) for a in inst["annotations"]]


def test_png_ids_match_segments_info_exactly(tmp_path):
    root = generate_shapes(tmp_path / "s", SMALL, progress=False, panoptic=True)
    pan = json.loads((root / "annotations" / "panoptic_train2017.json").read_text())
    for ann in pan["annotations"]:
        ids = rgb_to_id(np.asarray(PIL.Image.open(root / "panoptic_train2017" / ann["file_name"])))
        values, counts = np.unique(ids, return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
            s["id"]: s["area"] for s in ann["segments_info"]}
        assert sum(counts) == 64 * 64 and 0 not in values.tolist()


@pytest.mark.parametrize("seed", range(12))
def test_stuff_regions_and_things_partition_the_image(seed):
    params = ShapesParams(image_size=96)
    pixels, objects, stuff = render_panoptic_image(np.random.default_rng((seed, 0, 0)), params)
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
    kinds = set(np.unique(stuff).tolist())
    assert 2 <= len(kinds) <= 3 and kinds <= set(range(len(STUFF_CLASSES)))
    segments = panoptic_segments(objects, stuff, params)
    cover = np.sum([m for _, m in segments], axis=0)
    assert (cover == 1).all()
    assert [c for c, _ in segments if c < 6] == [o.label for o in objects if o.mask.any()]
    assert all(m.any() for _, m in segments)


def test_each_stuff_texture_differs_from_the_others():
    """Stuff classes are told apart by texture: mean |horizontal gradient| of each class's pixels."""
    roughness = {k: [] for k in range(len(STUFF_CLASSES))}
    for seed in range(20):
        pixels, _, stuff = render_panoptic_image(np.random.default_rng((seed, 1, 0)), ShapesParams(image_size=128))
        grad = np.abs(np.diff(pixels.astype(np.float32), axis=1)).mean(axis=2)
        for kind in np.unique(stuff).tolist():
            inside = (stuff[:, 1:] == kind) & (stuff[:, :-1] == kind)
            roughness[kind].append(float(grad[inside].mean()))
    means = sorted(np.mean(v) for v in roughness.values())
    assert means[1] - means[0] > 1.0 and means[2] - means[1] > 1.0, roughness


def test_ensure_default_panoptic_has_its_own_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DETRTOOL_CACHE", str(tmp_path / "cache"))
    small = {"seed": 1, "image_size": 32, "train_count": 2, "val_count": 1}
    root = ensure_default_shapes(progress=False, panoptic=True, **small)
    assert root == default_shapes_root(ShapesParams(**small), panoptic=True) != default_shapes_root(ShapesParams(**small))
    assert root.name.startswith("shapes-panoptic-v1-32px-2tr-1va-seed1-")
    assert (root / "annotations" / "panoptic_train2017.json").is_file() and (root / ".complete").is_file()
    stamp = (root / "panoptic_val2017" / "000000000001.png").stat().st_mtime_ns
    assert ensure_default_shapes(progress=False, panoptic=True, **small) == root
    assert (root / "panoptic_val2017" / "000000000001.png").stat().st_mtime_ns == stamp


def test_categories_follow_chosen_classes():
    params = ShapesParams(classes=("star", "circle"))
    assert [(c["id"], c["name"]) for c in panoptic_categories(params)] == [
        (0, "star"), (1, "circle"), (2, "sky"), (3, "ground"), (4, "wall")]


def test_data_shapes_panoptic_command(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    out = tmp_path / "pan"
    result = CliRunner().invoke(cli, ["data", "shapes", "--out", str(out), "--panoptic", "--train-count", "2",
                                      "--val-count", "1", "--image-size", "32", "--classes", "circle,star"])
    assert result.exit_code == 0, result.output
    assert "2 classes, ids 0..1; stuff sky, ground, wall: ids 2..4" in result.output
    pan = json.loads((out / "annotations" / "panoptic_val2017.json").read_text())
    assert [c["isthing"] for c in pan["categories"]] == [1, 1, 0, 0, 0]
    assert len(list((out / "panoptic_train2017").glob("*.png"))) == 2
