"""Red-team rows for the segmentation inputs (the bad-input matrix): COCO panoptic files that a reader once took
silently (``"category_id": true`` read as 1, ``isthing: "no"`` / ``null`` flipping a class between thing and
stuff, a JPEG renamed ``.png`` whose lossy pixels turned ids into "no pixel" noise) or crashed on (a segment
id of 2**70, an area of 2**2000, a category id of 10**9 allocating a class list of that length), each now one
line naming the file and the entry, through ``data check --panoptic`` and the loader of ``eval``/``train``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import PIL.Image
import pytest

from tests.cli.bad_input import check_bad_input
from tests.conftest import reference_path
from tests.data.test_check_panoptic import ID_A, PanopticFiles, write_panoptic


def _segment(**fields: Any) -> Callable[[PanopticFiles], None]:
    return lambda f: f.edit(lambda d: d["annotations"][0]["segments_info"][0].update(fields))


def _category(**fields: Any) -> Callable[[PanopticFiles], None]:
    return lambda f: f.edit(lambda d: d["categories"][0].update(fields))


def _jpeg(f: PanopticFiles) -> None:
    with PIL.Image.open(f.png(1)) as img:
        img.load()
    img.save(f.png(1), format="JPEG", quality=100)


def _category_id_huge(f: PanopticFiles) -> None:
    def change(data: dict[str, Any]) -> None:
        data["categories"][0]["id"] = 10**9
        for seg in data["annotations"][0]["segments_info"]:
            seg["category_id"] = 10**9 if seg["category_id"] == 1 else seg["category_id"]
    f.edit(change)


#: (plant, names the error line holds besides the file); the file named is the JSON unless it says "png"
CASES: dict[str, tuple[Callable[[PanopticFiles], None], list[str]]] = {
    "category-id-true": (_segment(category_id=True), [f"segment {ID_A}: 'category_id' is True, not an integer"]),
    "segment-id-float": (_segment(id=float(ID_A)), [f"'id' is {float(ID_A)}, not an integer"]),
    "segment-id-negative": (_segment(id=-5), ["segment id -5 is negative"]),
    "segment-id-over-256-cubed": (_segment(id=2**70), [f"segment id {2**70} is over 16777215 (256³ - 1)"]),
    "area-beyond-float": (_segment(area=2**2000), [f"segment {ID_A}: 'area' is 1148130695", "not a number"]),
    "isthing-no": (_category(isthing="no"), ["category 1 ('cat'): 'isthing' is 'no', not 0 or 1"]),
    "isthing-null": (_category(isthing=None), ["category 1 ('cat'): 'isthing' is None, not 0 or 1"]),
    "category-id-huge": (_category_id_huge, ["category id 1000000000 is outside 0..65535"]),
    "png-is-a-jpeg": (_jpeg, ["png", "panoptic PNG is a JPEG file, not a PNG"]),
}


def _named(files: PanopticFiles, names: list[str]) -> list[str]:
    return [str(files.png(1)), *names[1:]] if names[0] == "png" else [str(files.ann), *names]


@pytest.mark.parametrize("case", list(CASES))
def test_panoptic_check_refuses(tmp_path, case):
    files = write_panoptic(tmp_path / "pan", 1)
    plant, names = CASES[case]
    plant(files)
    check_bad_input(["data", "check", files.root, "--panoptic"], names=[*_named(files, names), "found 1 error(s)"],
                    protect=[files.root])


@pytest.mark.parametrize("case", ["category-id-true", "isthing-null", "category-id-huge", "png-is-a-jpeg"])
def test_panoptic_eval_refuses(tmp_path, case):
    """The loader of eval (and train: the same CocoPanoptic) refuses what the check calls an error."""
    files = write_panoptic(tmp_path / "pan", 1)
    plant, names = CASES[case]
    plant(files)
    out = tmp_path / "out"
    check_bad_input(["eval", "--resume", reference_path("segm_tiny_checkpoint.pth"), "--coco-panoptic-path",
                     files.root, "--output-dir", out, "--masks", "--batch-size", "1", "--no-progress"],
                    names=_named(files, names), protect=[files.root, out])
