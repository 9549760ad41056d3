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


# ----------------------------------------------------------------------------------- the write rule
def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.mark.parametrize("length", [200, 240, 255])
def test_temp_names_stay_within_255_bytes(tmp_path, length):
    from detr_core.atomic import atomic_output, parse_temp

    target = tmp_path / ("é" * ((length - 5) // 2) + "x" * ((length - 5) % 2) + ".onnx")
    assert len(target.name.encode()) == length
    with atomic_output(target, suffix=".onnx") as tmp:
        assert len(tmp.name.encode()) <= 255 and tmp.name.endswith(".onnx") and parse_temp(tmp.name)
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_link_at_the_target_is_refused_and_its_target_kept(tmp_path, dangling):
    from detr_core.atomic import WriteRefused

    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"keep")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    with pytest.raises(WriteRefused, match="out.json is a symbolic link: detrtool does not write through links"):
        atomic_write_bytes(link, b"{}")
    assert link.is_symlink() and (dangling or victim.read_bytes() == b"keep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"] + ([] if dangling else ["victim"])


def test_open_no_follow_refuses_a_link_and_a_fifo(tmp_path):
    import os

    from detr_core.atomic import WriteRefused, open_no_follow

    (tmp_path / "victim").write_bytes(b"keep")
    (tmp_path / "link").symlink_to(tmp_path / "victim")
    os.mkfifo(tmp_path / "fifo")
    for name, why in (("link", "symbolic link"), ("fifo", "not a regular file")):
        with pytest.raises(WriteRefused, match=why):
            open_no_follow(tmp_path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    assert (tmp_path / "victim").read_bytes() == b"keep"


def test_only_marked_temps_of_dead_processes_are_swept(tmp_path):
    import os

    from detr_core.atomic import remove_orphans, sweep_temps

    dead, live = _dead_pid(), os.getpid()
    orphan = tmp_path / f".out.json.detrtool-{dead}-abc12345.tmp"
    stage = tmp_path / f".folder.detrtool-{dead}-abc12345.tmp"
    kept = [tmp_path / ".out.json.tmp", tmp_path / f".out.json.{dead}.abc12345.tmp",
            tmp_path / f".out.json.detrtool-{live}-abc12345.tmp", tmp_path / "notes.tmp"]
    for path in (orphan, *kept):
        path.write_text("x")
    (stage / "new").mkdir(parents=True)
    (tmp_path / f".link.detrtool-{dead}-abc12345.tmp").symlink_to(tmp_path / "notes.tmp")
    assert remove_orphans(tmp_path / "out.json") == [orphan]
    assert sweep_temps(tmp_path) == [stage]
    assert all(p.exists() for p in kept) and (tmp_path / f".link.detrtool-{dead}-abc12345.tmp").is_symlink()


def test_a_parent_that_is_a_file_is_named(tmp_path):
    from detr_core.atomic import WriteRefused

    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteRefused, match=r"afile is a file, not a folder: cannot create .*afile/sub"):
        atomic_write_bytes(tmp_path / "afile" / "sub" / "out.json", b"{}")


def test_a_staging_folder_that_cannot_be_made_names_the_target(tmp_path, monkeypatch):
    import errno
    import tempfile

    from detr_core.atomic import atomic_folder

    def refuse(prefix="", suffix="", dir=None):
        raise OSError(errno.ENOSPC, "No space left on device", f"{dir}/{prefix}abcdefgh{suffix}")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(OSError) as caught, atomic_folder(tmp_path / "out"):
        pass
    assert caught.value.filename == str(tmp_path / "out") and not list(tmp_path.iterdir())


def test_temp_folder_removes_what_a_killed_process_left(tmp_path, monkeypatch):
    import os
    import tempfile

    from detr_core.atomic import temp_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    left = tmp_path / f"detrtool-predict.detrtool-{_dead_pid()}-abcdefgh.tmp"
    (left / "sub").mkdir(parents=True)
    alive = tmp_path / f"detrtool-predict.detrtool-{os.getppid()}-abcdefgh.tmp"
    alive.mkdir()
    foreign = tmp_path / "detrtool-predict-abcdefgh"  # an unmarked name (older versions): never touched
    foreign.mkdir()
    with temp_folder("predict") as folder:
        assert folder.is_dir() and folder.name.startswith(f"detrtool-predict.detrtool-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, foreign.name])


def test_probe_writable_removes_a_killed_process_probe_only(tmp_path):
    from detr_core.atomic import probe_writable

    dead = tmp_path / f".detrtool-probe.detrtool-{_dead_pid()}-abcdefgh.tmp"
    mine = tmp_path / ".detrtool-probe.tmp"
    for path in (dead, mine):
        path.write_bytes(b"\0" * 4096)
    probe_writable(tmp_path)
    assert sorted(tmp_path.iterdir()) == [mine]


def test_a_long_named_target_s_orphan_is_removed_by_the_next_write(tmp_path):
    from detr_core.atomic import atomic_output, temp_name

    target = tmp_path / ("m" * 250 + ".onnx")
    prefix, end = temp_name(target.name, suffix=".onnx", pid=_dead_pid())
    orphan = tmp_path / f"{prefix}abcdefgh{end}"
    orphan.write_bytes(b"half an export")
    assert len(orphan.name.encode()) <= 255
    with atomic_output(target, suffix=".onnx") as tmp:
        tmp.write_bytes(b"new")
    assert sorted(tmp_path.iterdir()) == [target]
