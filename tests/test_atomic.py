"""detr_core.atomic: a failed write or rename names the target the caller asked for, and leaves no temp file."""

from __future__ import annotations

import pytest

from detr_core.atomic import atomic_write_bytes


def test_a_rename_onto_a_folder_names_the_target_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.json"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"{}")
    assert caught.value.filename == str(target) and caught.value.filename2 is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"] and (target / "inside").is_dir()
