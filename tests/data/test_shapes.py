"""Synthetic shapes: COCO layout, determinism (byte-identical), tight boxes, cache reuse."""

from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
import pytest

from detr_core.data import (
    CocoDetection,
    ShapesParams,
    default_shapes_root,
    ensure_default_shapes,
    generate_shapes,
)
from detr_core.data.shapes import mask_to_bbox, render_image
from tests.data import tree_bytes

SMALL = ShapesParams(seed=3, image_size=64, train_count=12, val_count=4)



def test_layout_and_annotations(tmp_path):
    root = generate_shapes(tmp_path / "s", SMALL, progress=False)
    data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    assert len(data["images"]) == 12 and len(list((root / "val2017").glob("*.png"))) == 4
    assert [c["id"] for c in data["categories"]] == list(range(6))
    assert all(1 <= sum(a["image_id"] == i["id"] for a in data["annotations"]) <= 5 for i in data["images"])
    assert min(a["id"] for a in data["annotations"]) == 1 and min(i["id"] for i in data["images"]) == 1
    ds = CocoDetection(root / "val2017", root / "annotations" / "instances_val2017.json")
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and ds.num_classes == 6 and len(target["boxes"]) >= 1


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    a = tree_bytes(generate_shapes(tmp_path / "a", SMALL, progress=False))
    b = tree_bytes(generate_shapes(tmp_path / "b", SMALL, progress=False))
    assert a == b
    c = tree_bytes(generate_shapes(tmp_path / "c", ShapesParams(**{**SMALL.__dict__, "seed": 4}), progress=False))
    assert c.keys() == a.keys() and c != a


@pytest.mark.parametrize("seed", range(20))
def test_boxes_tight_on_drawn_pixels(seed):
    params = ShapesParams(image_size=96)
    pixels, objects = render_image(np.random.default_rng((seed, 0, 0)), params)
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
    label_map = np.zeros((96, 96), dtype=int)
    for k, obj in enumerate(objects, start=1):
        assert not (label_map[obj.mask] > 0).any()  # visible masks are disjoint
        label_map[obj.mask] = k
        assert obj.mask.sum() >= 0.5 * obj.full_area  # at least half of every object stays visible
        x, y, w, h = mask_to_bbox(obj.mask)
        assert obj.mask[y:y + h, x:x + w].sum() == obj.mask.sum()  # contains every visible pixel
        assert obj.mask[y, x:x + w].any() and obj.mask[y + h - 1, x:x + w].any()  # touches all four sides
        assert obj.mask[y:y + h, x].any() and obj.mask[y:y + h, x + w - 1].any()


def test_written_boxes_match_written_pixels(tmp_path):
    """Object pixels differ from the background: the box edges sit where the written image changes."""
    params = ShapesParams(seed=0, image_size=64, train_count=1, val_count=0, max_objects=1)
    root = generate_shapes(tmp_path / "one", params, progress=False)
    data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    pixels = np.asarray(PIL.Image.open(root / "train2017" / data["images"][0]["file_name"]), dtype=np.float32)
    _, objects = render_image(np.random.default_rng((0, 0, 0)), params)
    assert data["annotations"][0]["bbox"] == mask_to_bbox(objects[0].mask)
    inside = pixels[objects[0].mask].mean(axis=0)
    outside = pixels[~objects[0].mask].mean(axis=0)
    assert np.linalg.norm(inside - outside) > 20


def test_mask_to_bbox_pixel_edges():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 3] = True
    assert mask_to_bbox(mask) == [3, 2, 1, 3]


def test_bad_params():
    with pytest.raises(ValueError, match="unknown or no classes"):
        ShapesParams(classes=("blob",))
    with pytest.raises(ValueError, match="min_objects"):
        ShapesParams(max_objects=0)


def test_cache_dir_and_ensure_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DETRTOOL_CACHE", str(tmp_path / "cache"))
    params = {"image_size": 32, "train_count": 3, "val_count": 2, "seed": 1}
    root = ensure_default_shapes(progress=False, **params)
    assert root == default_shapes_root(ShapesParams(**params))
    assert root.parent == tmp_path / "cache" and "32px-3tr-2va-seed1" in root.name
    stamp = (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns
    assert ensure_default_shapes(progress=False, **params) == root
    assert (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns == stamp
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".tmp")]
    assert default_shapes_root(ShapesParams(**{**params, "seed": 2})) != root


def test_build_dataset_sources(tmp_path, monkeypatch):
    from detr_core.data import DatasetError, DatasetSource, build_dataset
    from tests.data import write_voc

    monkeypatch.setenv("DETRTOOL_CACHE", str(tmp_path / "cache"))
    small = {"image_size": 32, "train_count": 2, "val_count": 1}
    ds, num_classes, names = build_dataset(DatasetSource(), "val", shapes_params=small, progress=False)
    assert len(ds) == 1 and num_classes == 6 and names[0] == "circle"
    root = ensure_default_shapes(progress=False, **small)
    built = build_dataset(DatasetSource(coco_path=str(root)), "train")
    assert len(built.dataset) == 2 and built.num_classes == 6
    explicit = DatasetSource(val_images=str(root / "val2017"),
                             val_ann=str(root / "annotations" / "instances_val2017.json"))
    assert len(build_dataset(explicit, "val").dataset) == 1
    with pytest.raises(DatasetError, match="the train split needs both --train-images and --train-ann"):
        build_dataset(explicit, "train")
    voc = build_dataset(DatasetSource(voc_root=str(write_voc(tmp_path)), remove_difficult=True), "train")
    assert len(voc.dataset) == 3 and voc.num_classes == 20
    assert build_dataset(DatasetSource(voc_root=str(tmp_path / "VOCdevkit")), "val").dataset.split == "val"


def test_ensure_sweeps_only_dead_marked_staging_folders(tmp_path, monkeypatch):
    """A kill -9 during generation leaves a marked staging folder: the next call removes it when its pid is dead;
    a live run's staging folder and a user's folder that merely looks temporary are kept."""
    import subprocess
    import sys

    from detr_core.data.shapes import default_shapes_root

    monkeypatch.setenv("DETRTOOL_CACHE", str(tmp_path / "cache"))
    params = {"train_count": 2, "val_count": 1, "image_size": 32}
    root = default_shapes_root(ShapesParams(**params))
    root.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = root.parent / f".{root.name}.detrtool-{int(dead.stdout)}-abcdefgh.tmp"
    live = root.parent / f".{root.name}.detrtool-{os.getppid()}-abcdefgh.tmp"
    users = root.parent / ".tmp-shapes-mine"
    for folder in (killed, live, users):
        folder.mkdir()
        (folder / "keep.txt").write_text("x")
    assert ensure_default_shapes(progress=False, **params) == root
    assert not killed.exists() and (live / "keep.txt").exists() and (users / "keep.txt").exists()
    assert sorted(p.name for p in root.parent.iterdir()) == sorted([root.name, live.name, users.name])


def test_a_cache_folder_detrtool_did_not_finish_is_refused_not_removed(tmp_path, monkeypatch):
    from detr_core.data.coco import DatasetError
    from detr_core.data.shapes import default_shapes_root

    monkeypatch.setenv("DETRTOOL_CACHE", str(tmp_path / "cache"))
    params = {"train_count": 2, "val_count": 1, "image_size": 32}
    root = default_shapes_root(ShapesParams(**params))
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("the user's own file")
    with pytest.raises(DatasetError, match="without the shapes cache's completion marker .* will not remove it"):
        ensure_default_shapes(progress=False, **params)
    assert (root / "notes.txt").read_text() == "the user's own file" and len(list(root.iterdir())) == 1
