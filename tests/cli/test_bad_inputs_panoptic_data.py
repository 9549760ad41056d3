"""Bad inputs for ``detrtool data shapes --panoptic`` (the bad-input matrix, segmentation data)."""

from __future__ import annotations

import subprocess

import pytest

from tests.cli.bad_input import check_bad_input, tmpfs


def test_panoptic_max_objects_over_the_segment_id_limit(tmp_path):
    out = tmp_path / "s"
    check_bad_input(["data", "shapes", "--out", out, "--panoptic", "--max-objects", "253"],
                    names=["--max-objects", "253", "over 252"], exit_code=2, protect=[out])
    assert not out.exists()


def test_panoptic_read_only_out(tmp_path):
    with tmpfs(tmp_path / "ro") as folder:
        (folder / "annotations").mkdir()
        (folder / "annotations" / "panoptic_val2017.json").write_text("{}")
        done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount {folder} read-only ({done.stderr.strip()})")
        check_bad_input(["data", "shapes", "--out", folder, "--panoptic", "--train-count", "1", "--val-count", "1"],
                        names=[str(folder), "read-only"], protect=[folder])
