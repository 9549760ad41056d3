"""``detrtool data check`` reads instance segmentations too: a malformed one is an error naming the file and
the annotation (a segmentation model's training would refuse it at load); empty ``[]`` (box-only exports) is
fine."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.cli.bad_input import check_bad_input
from tests.data import write_coco

IMAGES = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]


def _ann(segmentation) -> list[dict]:
    return [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "iscrowd": 0, "area": 200,
             "segmentation": segmentation}]


@pytest.mark.parametrize(("segmentation", "names"), [
    ([[1, 2, 3]], ["polygon"]),
    ({"size": [10, 10], "counts": "abc"}, ["RLE"]),
    ("circle", ["str"]),
], ids=["odd-polygon", "rle-size", "not-a-list-or-dict"])
def test_malformed_segmentation_is_an_error_naming_the_annotation(tmp_path, segmentation, names):
    images, ann = write_coco(tmp_path, IMAGES, _ann(segmentation))
    check_bad_input(["data", "check", ann, "--images", images], names=[str(ann), "annotation 7", "segmentation", *names])


def test_empty_and_valid_segmentations_pass(tmp_path):
    images, ann = write_coco(tmp_path, IMAGES, _ann([]) + [{**_ann([[5, 5, 25, 5, 25, 15, 5, 15]])[0], "id": 8}])
    result = CliRunner().invoke(cli, ["data", "check", str(ann), "--images", str(images)])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output and json.loads(ann.read_text())["annotations"][1]["id"] == 8
