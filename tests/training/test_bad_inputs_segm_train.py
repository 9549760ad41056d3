"""Bad inputs to ``train --masks`` through the real CLI: one error line naming what is wrong, no traceback,
and the output folder untouched."""

from __future__ import annotations

import pytest

from tests.cli.bad_input import check_bad_input
from tests.data import write_voc
from tests.training.helpers import make_tiny_shapes

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--backbone", "small_cnn", "--enc-layers", "1", "--dec-layers", "1", "--dim-feedforward", "64",
         "--num-queries", "4", "--epochs", "1", "--no-progress", "--pretrain-epochs", "0"]


def test_masks_on_box_only_voc_data(tmp_path):
    root = write_voc(tmp_path / "VOCdevkit")
    check_bad_input(["train", "--masks", "--voc-root", root, *SMALL, "--hidden-dim", "128", "--nheads", "8",
                     "--output-dir", tmp_path / "out"], names=["--voc-root", "boxes only", "--masks"])


def test_masks_with_a_hidden_dim_the_mask_head_cannot_take(tmp_path):
    root = make_tiny_shapes(tmp_path / "shapes")
    check_bad_input(["train", "--masks", "--coco-path", root, *SMALL, "--hidden-dim", "64", "--nheads", "4",
                     "--output-dir", tmp_path / "out"], names=["mask head", "hidden_dim", "64", "128"])


def test_masks_on_coco_data_without_segmentations(tmp_path):
    from tests.training.helpers import make_small_coco

    root = make_small_coco(tmp_path / "coco")
    check_bad_input(["train", "--masks", "--train-images", root / "val2017", "--train-ann",
                     root / "annotations/instances_val2017.json", "--val-images", root / "val2017", "--val-ann",
                     root / "annotations/instances_val2017.json", *SMALL, "--hidden-dim", "128", "--nheads", "8",
                     "--output-dir", tmp_path / "out"], names=["instances_val2017.json", "segmentation"])
