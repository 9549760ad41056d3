"""The compile rows' kernel cache: private, under the bench cache, restored after the run."""

from __future__ import annotations

import os

from bench.runtimes import inductor_cache


def test_a_private_folder_is_used_during_the_run_only(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with inductor_cache(tmp_path):
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    assert (tmp_path / "inductor").stat().st_mode & 0o777 == 0o700


def test_a_folder_others_can_write_or_a_link_is_not_used(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    shared = tmp_path / "shared"
    (shared / "inductor").mkdir(parents=True)
    (shared / "inductor").chmod(0o777)
    with inductor_cache(shared):
        assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (linked / "inductor").symlink_to(tmp_path / "elsewhere")
    with inductor_cache(linked):
        assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def test_a_cache_dir_the_user_set_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    with inductor_cache(tmp_path):
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    assert not (tmp_path / "inductor").exists()
