"""Bad inputs for ``detrtool data check --panoptic`` (the bad-input matrix, COCO panoptic): each planted problem
in a one-image reference-layout folder is exit 1 and one ``Error:`` line naming the file and the image /
segment id, counting exactly one error; warnings alone exit 0."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import PIL.Image
import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.cli.bad_input import check_bad_input
from tests.data.test_check_panoptic import ID_A, PanopticFiles, good_ids, good_segments, write_panoptic

#: plants the problem; returns the names the error line must hold (a lambda's list starts with the planting
#: call's None, cut off by [1:])
Plant = Callable[[PanopticFiles], list[Any]]


def _png_size(f: PanopticFiles) -> list[Any]:
    f.write_png(1, good_ids(21, 30))
    return [f.png(1), "image 1", "21x30 (HxW)", "'1.png' is 20x30"]


def _segments(f: PanopticFiles, *extra: dict[str, Any]) -> None:
    f.set_segments(1, good_segments() + list(extra))


def _two_annotations(f: PanopticFiles) -> list[Any]:
    f.edit(lambda d: d["annotations"].append({**d["annotations"][0], "file_name": "1b.png"}))
    shutil.copy(f.png(1), f.pngs / "1b.png")
    return [f.ann, "image 1", "two annotations ('1.png' and '1b.png')"]


CASES: dict[str, Plant] = {
    "png-missing": lambda f: [f.png(1).unlink(), f.png(1), "image 1", "panoptic PNG is missing"][1:],
    "png-unreadable": lambda f: [f.png(1).write_bytes(b"\x89PNG\r\n\x1a\nbroken"), f.png(1), "image 1",
                                 "not a readable image"][1:],
    "png-not-rgb": lambda f: [PIL.Image.new("L", (30, 20)).save(f.png(1)), f.png(1), "image 1", "mode L"][1:],
    "png-size": _png_size,
    "png-outside": lambda f: [f.edit(lambda d: d["annotations"][0].update(file_name="../1.png")), f.ann,
                              "image 1", "'../1.png'", "outside"][1:],
    "image-missing": lambda f: [f.image(1).unlink(), f.image(1), "image 1", "image file is missing"][1:],
    "image-unreadable": lambda f: [f.image(1).write_bytes(b"garbage"), f.image(1), "image 1",
                                   "not a readable image"][1:],
    "segment-without-pixel": lambda f: [_segments(f, {"id": 5, "category_id": 1}), f.png(1), "image 1 segment 5",
                                        "no pixel"][1:],
    "iscrowd-not-0-1": lambda f: [_segments(f, {"id": 5, "category_id": 1, "iscrowd": 2}), f.ann, "image 1",
                                  "segment 5", "'iscrowd' is 2"][1:],
    "area-not-a-number": lambda f: [_segments(f, {"id": 5, "category_id": 1, "area": "x"}), f.ann, "image 1",
                                    "segment 5", "'area' is 'x'"][1:],
    "unknown-category": lambda f: [_segments(f, {"id": 5, "category_id": 3}), f.ann, "image 1",
                                   "segment 5 has category_id 3, not in 'categories'"][1:],
    "duplicate-segment": lambda f: [_segments(f, {"id": ID_A, "category_id": 4}), f.ann, "image 1",
                                    f"segment id {ID_A} is listed twice"][1:],
    "void-segment-id": lambda f: [_segments(f, {"id": 0, "category_id": 1}), f.ann, "image 1",
                                  "segment id 0 is 0 (void)"][1:],
    "segments-not-a-list": lambda f: [f.set_segments(1, {}), f.ann, "image 1", "'segments_info' is not a list"][1:],
    "annotation-of-unknown-image": lambda f: [
        f.edit(lambda d: d["annotations"].append({"image_id": 99, "file_name": "1.png", "segments_info": []})),
        f.ann, "'1.png' names image_id 99, not in 'images'"][1:],
    "two-annotations-one-image": _two_annotations,
    "no-annotations-list": lambda f: [f.edit(lambda d: d.pop("annotations")), f.ann,
                                      "no 'annotations' list"][1:],
    "unreadable-json": lambda f: [f.ann.write_text("{"), f.ann, "not readable JSON"][1:],
    "json-missing": lambda f: [f.ann.unlink(), f.ann, "annotation file is missing"][1:],
}


@pytest.mark.parametrize("case", list(CASES))
def test_panoptic_check_bad_input(tmp_path, case):
    files = write_panoptic(tmp_path / "pan", 1)
    names = CASES[case](files)
    check_bad_input(["data", "check", files.root, "--panoptic"], names=[*map(str, names), "found 1 error(s)"],
                    protect=[files.root])


def test_num_classes_too_small(tmp_path):
    files = write_panoptic(tmp_path, 1)
    check_bad_input(["data", "check", files.root, "--panoptic", "--num-classes", "4"],
                    names=[str(files.ann), "category ids [4] do not fit num_classes=4", "found 1 error(s)"])


def test_panoptic_json_needs_images(tmp_path):
    files = write_panoptic(tmp_path, 1)
    check_bad_input(["data", "check", files.ann, "--panoptic"], names=["--images"], exit_code=2)


def test_every_problem_listed_and_warnings_alone_pass(tmp_path):
    files = write_panoptic(tmp_path, 3)
    files.png(1).unlink()
    files.image(2).unlink()
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "check", str(files.root), "--panoptic"])
    assert result.exit_code == 1 and result.output.count("\nERROR ") == 2, result.output
    assert f"found 2 error(s) (first: image 1: {files.png(1)}: panoptic PNG is missing)" in result.output
    shutil.rmtree(files.root)
    files = write_panoptic(tmp_path, 3)
    ids = good_ids()
    ids[-1, -1] = 77  # a void pixel: the segments keep their boxes and areas
    files.write_png(3, ids)
    files.edit(lambda d: d["annotations"].pop(1))
    result = runner.invoke(cli, ["data", "check", str(files.root), "--panoptic"])
    assert result.exit_code == 0, result.output
    assert "0 error(s), 2 warning(s)" in result.output and "segment id(s) [77] not in segments_info" in result.output


def test_panoptic_json_with_its_png_folder(tmp_path):
    """COCO's download: annotations/panoptic_val2017.json with its PNGs in annotations/panoptic_val2017/."""
    files = write_panoptic(tmp_path, 2)
    files.pngs.rename(files.ann.with_suffix(""))
    result = CliRunner().invoke(cli, ["data", "check", str(files.ann), "--panoptic", "--images", str(files.images)])
    assert result.exit_code == 0 and "images: 2\nannotations: 6\n" in result.output, result.output


def test_panoptic_folder_with_images_elsewhere(tmp_path):
    files = write_panoptic(tmp_path / "pan", 2)
    elsewhere = files.images.rename(tmp_path / "imgs")
    check_bad_input(["data", "check", files.root, "--panoptic"],
                    names=[str(files.image(1)), "image 1", "image file is missing", "found 2 error(s)"])
    result = CliRunner().invoke(cli, ["data", "check", str(files.root), "--panoptic", "--images", str(elsewhere)])
    assert result.exit_code == 0 and f"(images in {elsewhere}, PNGs in {files.pngs})" in result.output, result.output
