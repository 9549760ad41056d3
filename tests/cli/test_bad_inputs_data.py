"""Bad datasets and options for ``detrtool data`` (check, voc2coco, shapes), ``eval`` and predict's image
reader: one ``Error:`` line naming the file / entry / option, no traceback, earlier outputs untouched.

Every COCO variant below runs through ``data check`` (which reports it) and ``eval`` (which refuses it
before scoring anything), so both commands are held to the same rule for the same file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.cli.bad_input import check_bad_input, fill, run_cli, tmpfs
from tests.data import write_png_bomb, write_voc
from tests.training.helpers import make_small_coco

pytestmark = pytest.mark.usefixtures("one_thread")

ANN = "annotations/instances_val2017.json"


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return make_small_coco(tmp_path_factory.mktemp("bad-data"))


@pytest.fixture
def dataset(coco_root, tmp_path) -> tuple[Path, dict[str, Any]]:
    """A private copy of the 5-image set: (images folder, annotation dict to mutate)."""
    images = Path(shutil.copytree(coco_root / "val2017", tmp_path / "images"))
    return images, json.loads((coco_root / ANN).read_text())


@pytest.fixture
def previous(tmp_path) -> Path:
    """An earlier eval's output folder (must survive a refused run byte for byte)."""
    out = tmp_path / "eval-out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    (out / "detections.json").write_text("[]")
    return out


def _write(tmp_path: Path, data: Any, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _eval_args(ann: Path, images: Path, out: Path, checkpoint: Path, *extra: Any) -> list[Any]:
    return ["eval", "--resume", checkpoint, "--nheads", "4", "--val-images", images, "--val-ann", ann,
            "--output-dir", out, "--eval-size", "64", "--no-progress", *extra]


def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _add_annotation(**fields: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        d["annotations"].append({**d["annotations"][0], "id": 999, **fields})
    return mutate


# id, mutation of the annotation dict, names in `data check`'s error line, names in `eval`'s
COCO_VARIANTS = [
    ("duplicate image id", _set(("images", 4, "id"), 2),
     ["duplicate image id 2", "images[1]", "'0002.png'", "images[4]", "'0005.png'"],
     ["duplicate image id 2", "'0002.png'", "'0005.png'"]),
    ("duplicate annotation id", _set(("annotations", 1, "id"), 1),
     ["duplicate annotation id 1", "annotations[0]", "annotations[1]"], ["duplicate annotation id 1"]),
    ("duplicate category id", _set(("categories", 1, "id"), 0),
     ["duplicate category id 0", "'a'", "'b'"], ["duplicate category id 0", "'a'", "'b'"]),
    ("annotation of a missing image", _add_annotation(image_id=77),
     ["annotation 999", "image_id 77"], ["annotation 999 -> image 77", "not in images[]"]),
    ("category not in categories", _add_annotation(category_id=9),
     ["annotation 999", "category_id 9"], ["annotation 999 -> category 9", "not in categories[]"]),
    ("bbox of three numbers", _add_annotation(bbox=[1, 2, 3]),
     ["annotation 999", "[1, 2, 3]", "not four numbers"], ["annotation 999", "[1, 2, 3]", "not four numbers"]),
    ("bbox of strings", _add_annotation(bbox=["1", "2", "3", "4"]),
     ["annotation 999", "not four numbers"], ["annotation 999", "not four numbers"]),
    ("image id that is a string", _set(("images", 0, "id"), "one"),
     ["images[0]", "'id'", "not an integer"], ["images[0]", "'id'", "not an integer"]),
    ("annotations not a list", _set(("annotations",), {"id": 1}),
     ["'annotations' is not a list"], ["'annotations' is not a list"]),
    ("absolute file_name", _set(("images", 0, "file_name"), "/etc/hostname"),
     ["image 1", "'/etc/hostname'", "absolute", "--allow-outside-images"],
     ["image 1", "'/etc/hostname'", "absolute", "--allow-outside-images"]),
    ("file_name climbing out", _set(("images", 0, "file_name"), "../outside.png"),
     ["image 1", "'../outside.png'", "'..'"], ["image 1", "'../outside.png'", "'..'"]),
    ("no images", lambda d: d.update(images=[], annotations=[]), ["no images"], ["the evaluation set is empty"]),
]


@pytest.mark.parametrize("mutate, check_names", [v[1:3] for v in COCO_VARIANTS], ids=[v[0] for v in COCO_VARIANTS])
def test_data_check_reports(dataset, tmp_path, mutate, check_names):
    images, data = dataset
    mutate(data)
    ann = _write(tmp_path, data)
    check_bad_input(["data", "check", ann, "--images", images], names=[str(ann), *check_names])


@pytest.mark.parametrize("mutate, eval_names", [v[1:4:2] for v in COCO_VARIANTS], ids=[v[0] for v in COCO_VARIANTS])
def test_eval_refuses(dataset, tmp_path, previous, tiny_checkpoint_path, mutate, eval_names):
    images, data = dataset
    mutate(data)
    ann = _write(tmp_path, data)
    check_bad_input(_eval_args(ann, images, previous, tiny_checkpoint_path), names=[str(ann), *eval_names],
                    protect=[previous, ann])


# id, file content, names in the error line (data check and eval alike)
BAD_FILES = [
    ("JSON that is not JSON", '{"images": [', ["not readable JSON"]),
    ("JSON that is a list", "[1, 2, 3]", ["not a COCO annotation file"]),
    ("JSON that is empty", "", ["not readable JSON"]),
]


@pytest.mark.parametrize("command", ["check", "eval"])
@pytest.mark.parametrize("content, names", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_unreadable_annotation_file(dataset, tmp_path, previous, tiny_checkpoint_path, command, content, names):
    ann = _write(tmp_path, content)
    args = (["data", "check", ann, "--images", dataset[0]] if command == "check"
            else _eval_args(ann, dataset[0], previous, tiny_checkpoint_path))
    check_bad_input(args, names=[str(ann), *names], protect=[previous])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


# id, what happens to images/0003.png, names in the error line
BAD_IMAGES = [
    ("image file missing", lambda p: p.unlink(), ["0003.png", "image file is missing"]),
    ("image file truncated", _truncate, ["0003.png", "corrupt or truncated"]),
    ("image file not an image", lambda p: p.write_text("hello"), ["0003.png", "not a readable image"]),
    ("decompression bomb", lambda p: write_png_bomb(p), ["0003.png", "decompression bomb", "400,000,000 pixels",
                                                         "89,478,485"]),
]


@pytest.mark.parametrize("command", ["check", "eval"])
@pytest.mark.parametrize("spoil, names", [c[1:] for c in BAD_IMAGES], ids=[c[0] for c in BAD_IMAGES])
def test_bad_image_file(dataset, tmp_path, previous, tiny_checkpoint_path, command, spoil, names):
    images, data = dataset
    spoil(images / "0003.png")
    ann = _write(tmp_path, data)
    args = (["data", "check", ann, "--images", images] if command == "check"
            else _eval_args(ann, images, previous, tiny_checkpoint_path))
    check_bad_input(args, names=names, protect=[previous])


def test_eval_names_the_file_when_a_loader_worker_fails(dataset, tmp_path, previous, tiny_checkpoint_path):
    images, data = dataset
    (images / "0002.png").unlink()
    args = _eval_args(_write(tmp_path, data), images, previous, tiny_checkpoint_path, "--num-workers", "1")
    result = check_bad_input(args, names=["0002.png", "image file is missing"], protect=[previous])
    assert "DataLoader worker" not in result.output


def test_missing_annotation_file_is_a_usage_error(dataset, tmp_path, previous, tiny_checkpoint_path):
    ann = tmp_path / "absent.json"
    check_bad_input(["data", "check", ann, "--images", dataset[0]], names=["absent.json", "does not exist"], exit_code=2)
    check_bad_input(_eval_args(ann, dataset[0], previous, tiny_checkpoint_path), names=["--val-ann", "absent.json"],
                    exit_code=2, protect=[previous])


EVAL_OPTIONS = [
    ("--eval-size", "0"), ("--eval-size", "-5"), ("--batch-size", "0"), ("--num-workers", "-1"),
    ("--image-size", "0"), ("--nheads", "0"),
]


@pytest.mark.parametrize("option, value", EVAL_OPTIONS, ids=[f"{o} {v}" for o, v in EVAL_OPTIONS])
def test_eval_option_out_of_range(dataset, tmp_path, previous, tiny_checkpoint_path, option, value):
    args = [*_eval_args(_write(tmp_path, dataset[1]), dataset[0], previous, tiny_checkpoint_path), option, value]
    check_bad_input(args, names=[option, value], exit_code=2, protect=[previous])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_eval_cuda_without_a_gpu(dataset, tmp_path, previous, tiny_checkpoint_path):
    args = _eval_args(_write(tmp_path, dataset[1]), dataset[0], previous, tiny_checkpoint_path, "--device", "cuda")
    check_bad_input(args, names=["--device cuda", "CUDA is not available"], protect=[previous])


def _remount_read_only(folder: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount {folder} read-only ({done.stderr.strip()})")


def test_eval_read_only_output_dir(dataset, tmp_path, tiny_checkpoint_path):
    with tmpfs(tmp_path / "ro") as out:
        (out / "metrics.json").write_text('{"earlier": true}')
        _remount_read_only(out)
        args = _eval_args(_write(tmp_path, dataset[1]), dataset[0], out, tiny_checkpoint_path)
        check_bad_input(args, names=["--output-dir", str(out), "read-only"], protect=[out])


def test_eval_full_disk_keeps_the_previous_pair(dataset, tmp_path, tiny_checkpoint_path):
    with tmpfs(tmp_path / "full", size="64k") as out:
        (out / "metrics.json").write_text('{"earlier": true}')
        (out / "detections.json").write_text("[]")
        fill(out)
        args = _eval_args(_write(tmp_path, dataset[1]), dataset[0], out, tiny_checkpoint_path)
        check_bad_input(args, names=["--output-dir", str(out), "no space left"], protect=[out])
        assert sorted(p.name for p in out.iterdir()) == [".filler", "detections.json", "metrics.json"]


# --- data voc2coco / check on VOC / shapes ---------------------------------------------------------------------

BAD_BOX_VOC = {"000005": (50, 80, [("chair", 0, 40, 1, 20, 30), ("person", 0, 30, 10, 90, 50)]),
               "000007": (60, 40, [("car", 0, 5, 6, 35, 55)])}


@pytest.fixture
def previous_json(tmp_path) -> Path:
    out = tmp_path / "converted" / "val.json"
    out.parent.mkdir()
    out.write_text('{"earlier": true}')
    return out


def _voc_xml(root: Path, stem: str) -> Path:
    return root / "VOC2007" / "Annotations" / f"{stem}.xml"


def test_voc2coco_applies_data_checks_fixups(tmp_path, caplog):
    """xmin > xmax: dropped with a counted WARNING naming the XML file and object (data check's fix-up);
    a box past the image: clipped, counted the same way; both recorded in the JSON's info."""
    root, out = write_voc(tmp_path, BAD_BOX_VOC), tmp_path / "val.json"
    result = run_cli(["data", "voc2coco", root, "--split", "trainval", "--out", out])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [a["bbox"] for a in data["annotations"]] == [[29, 9, 51, 41], [4, 5, 31, 50]]
    assert all(a["area"] > 0 for a in data["annotations"])
    assert data["info"]["detrtool_fixups"] == {"zero-size or negative box dropped": 1,
                                               "out-of-bounds box clipped to the image": 1}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("1 zero-size or negative box dropped (first: 000005.xml object 0 (chair)" in w for w in warned)
    assert "2 boxes to" in result.output and "2 box fix-up(s)" in result.output
    check = run_cli(["data", "check", root])
    assert "zero-size or negative box dropped: 1" in check.output and "out-of-bounds box clipped" in check.output


def test_voc2coco_malformed_xml(tmp_path, previous_json):
    root = write_voc(tmp_path)
    _voc_xml(root, "000007").write_text("<annotation><size>")
    check_bad_input(["data", "voc2coco", root, "--split", "trainval", "--out", previous_json],
                    names=["000007.xml", "malformed XML"], protect=[previous_json])


def test_voc2coco_filename_outside_jpegimages(tmp_path, previous_json):
    root = write_voc(tmp_path)
    xml = _voc_xml(root, "000007")
    xml.write_text(xml.read_text().replace("<filename>000007.jpg", "<filename>../../../secret.jpg"))
    check_bad_input(["data", "voc2coco", root, "--split", "trainval", "--out", previous_json],
                    names=["000007.xml", "'../../../secret.jpg'", "--allow-outside-images"], protect=[previous_json])
    check_bad_input(["data", "check", root], names=["000007.xml", "'../../../secret.jpg'"])
    allowed = run_cli(["data", "voc2coco", root, "--split", "trainval", "--out", previous_json,
                       "--allow-outside-images"])
    assert allowed.exit_code == 0, allowed.output


def test_voc2coco_full_disk_keeps_the_previous_json(tmp_path):
    root = write_voc(tmp_path)
    with tmpfs(tmp_path / "full", size="64k") as folder:
        out = folder / "val.json"
        out.write_text('{"earlier": true}')
        fill(folder)
        check_bad_input(["data", "voc2coco", root, "--split", "trainval", "--out", out],
                        names=[str(folder), "no space left"], protect=[out])
        assert sorted(p.name for p in folder.iterdir()) == [".filler", "val.json"]


def test_voc2coco_read_only_out(tmp_path):
    root = write_voc(tmp_path)
    with tmpfs(tmp_path / "ro") as folder:
        out = folder / "val.json"
        out.write_text('{"earlier": true}')
        _remount_read_only(folder)
        check_bad_input(["data", "voc2coco", root, "--split", "trainval", "--out", out],
                        names=[str(folder), "read-only"], protect=[out])


def test_check_voc_unknown_class(tmp_path):
    root = write_voc(tmp_path, {"000005": (50, 80, [("unicorn", 0, 1, 1, 20, 30)])})
    check_bad_input(["data", "check", root], names=[str(root), "000005.xml object 0", "unknown VOC class 'unicorn'"])


@pytest.mark.parametrize("option, value", [("--seed", "-1"), ("--image-size", "8"), ("--max-objects", "0"),
                                           ("--train-count", "-3")])
def test_shapes_option_out_of_range(tmp_path, option, value):
    check_bad_input(["data", "shapes", "--out", tmp_path / "s", option, value], names=[option, value], exit_code=2)


def test_shapes_read_only_out(tmp_path):
    with tmpfs(tmp_path / "ro") as folder:
        (folder / "annotations").mkdir()
        (folder / "annotations" / "instances_val2017.json").write_text("{}")
        _remount_read_only(folder)
        check_bad_input(["data", "shapes", "--out", folder, "--train-count", "1", "--val-count", "1"],
                        names=[str(folder), "read-only"], protect=[folder])


def test_check_allows_outside_images_when_asked(dataset, tmp_path):
    images, data = dataset
    shutil.copy(images / "0001.png", tmp_path / "outside.png")
    data["images"][0]["file_name"] = "../outside.png"
    result = run_cli(["data", "check", _write(tmp_path, data), "--images", images, "--allow-outside-images"])
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.output and "'../outside.png' climbs out through '..'" in result.output


def test_predict_skips_and_lists_a_decompression_bomb(coco_root, tmp_path, tiny_checkpoint_path):
    bomb = write_png_bomb(tmp_path / "in" / "bomb.png")
    shutil.copy(coco_root / "val2017" / "0001.png", tmp_path / "in" / "good.png")
    out = tmp_path / "pred"
    result = check_bad_input(["predict", tmp_path / "in", "--output-dir", out, "--resume", tiny_checkpoint_path,
                              "--nheads", "4"], names=["1 input(s) skipped", str(bomb), "decompression bomb"])
    assert (out / "good.png").is_file() and not (out / "bomb.png").exists()
    assert f"  {bomb}: image refused as a possible decompression bomb" in result.output


def _train_args(ann: Path, images: Path, out: Path, *extra: Any) -> list[Any]:
    return ["train", "--train-images", images, "--train-ann", ann, "--val-images", images, "--val-ann", ann,
            "--output-dir", out, "--epochs", "1", "--backbone", "small_cnn", "--hidden-dim", "32", "--nheads", "2",
            "--enc-layers", "1", "--dec-layers", "1", "--dim-feedforward", "64", "--num-queries", "5",
            "--transforms", "shapes", "--image-size", "64", "--batch-size", "2", "--no-progress", *extra]


def test_train_refuses_a_duplicate_image_id(dataset, tmp_path):
    images, data = dataset
    data["images"][4]["id"] = 2
    ann = _write(tmp_path, data)
    check_bad_input(_train_args(ann, images, tmp_path / "run"), names=[str(ann), "duplicate image id 2", "'0005.png'"],
                    protect=[ann])


def test_train_names_a_missing_image_from_a_loader_worker(dataset, tmp_path):
    images, data = dataset
    (images / "0001.png").unlink()
    result = check_bad_input(_train_args(_write(tmp_path, data), images, tmp_path / "run", "--num-workers", "1"),
                             names=["0001.png", "image file is missing"])
    assert "DataLoader worker" not in result.output


def test_eval_nheads_that_does_not_divide_the_width(dataset, tmp_path, previous, tiny_checkpoint_path):
    args = _eval_args(_write(tmp_path, dataset[1]), dataset[0], previous, tiny_checkpoint_path, "--nheads", "5")
    check_bad_input(args, names=[str(tiny_checkpoint_path), "nheads 5", "--nheads"], protect=[previous])


def test_eval_device_that_is_not_a_device(dataset, tmp_path, previous, tiny_checkpoint_path):
    args = _eval_args(_write(tmp_path, dataset[1]), dataset[0], previous, tiny_checkpoint_path, "--device", "gpu0")
    check_bad_input(args, names=["--device gpu0", "not a device name"], protect=[previous])


def test_eval_of_a_checkpoint_with_nan_weights(dataset, tmp_path, previous, tiny_checkpoint_path):
    ckpt = torch.load(tiny_checkpoint_path, weights_only=True)
    ckpt["model"]["class_embed.bias"] = torch.full_like(ckpt["model"]["class_embed.bias"], float("nan"))
    broken = tmp_path / "diverged.pth"
    torch.save(ckpt, broken)
    args = _eval_args(_write(tmp_path, dataset[1]), dataset[0], previous, broken)
    check_bad_input(args, names=["diverged.pth", "pred_logits", "NaN/inf", "nothing was scored"], protect=[previous])


def test_train_refuses_a_val_set_with_nothing_to_score(dataset, tmp_path):
    """Its periodic evaluation would log AP -1 every epoch: refused before the first step."""
    images, data = dataset
    train_ann = _write(tmp_path, data, "train.json")
    val_ann = _write(tmp_path, {**data, "annotations": []}, "val.json")
    args = _train_args(train_ann, images, tmp_path / "run")
    args[args.index("--val-ann") + 1] = val_ann
    check_bad_input(args, names=[str(val_ann), "no annotations to score"])
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


@pytest.mark.parametrize("name", ["a\x00b.png", "a\nError: fake.png", "a\x1b[2Kb.png"], ids=["nul", "newline", "escape"])
def test_control_characters_of_a_file_name_are_escaped(dataset, tmp_path, tiny_checkpoint_path, name):
    """A file_name carrying a NUL, a newline (which would forge a second 'Error:' line) or a terminal
    escape is shown escaped in the one error line."""
    images, data = dataset
    data["images"][0]["file_name"] = name
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    for command in (["data", "check", ann, "--images", images],
                    _eval_args(ann, images, tmp_path / "out", tiny_checkpoint_path)):
        result = check_bad_input(command, names=[name.encode("unicode_escape").decode()])  # the image, escaped
        assert not any(c in result.output for c in "\x00\x1b"), repr(result.output)
