"""Bad-input matrix of inputs that exhausted the machine, never ended or gave a silent wrong answer (issue 23,
part B): special files among a dataset's files, ids and sizes out of range, values of the wrong type or
scale. Each row: the real CLI, its exit code, one ``Error:`` line naming the file / entry / option, no
traceback, every pre-existing output byte-identical; the fifo rows under a time bound (``SIGALRM``: a
blocked ``open()`` is interrupted and the row fails instead of hanging the suite)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from tests.cli.bad_input import check_bad_input, run_cli
from tests.data import write_image, write_voc
from tests.data.handmade import coco91_checkpoint, write_yolo
from tests.data.test_check_panoptic import write_panoptic
from tests.training.helpers import make_small_coco

pytestmark = pytest.mark.usefixtures("one_thread")

ANN = "annotations/instances_val2017.json"
HANG_LIMIT_S = 30  #: a refused fifo is a millisecond; a blocked open() waits forever


class StillRunning(BaseException):
    """Raised by the alarm: a ``BaseException``, so no ``except OSError`` / ``except Exception`` of the code under
    test can take it for a read error and go on (to block again)."""


_FIFOS: list[Path] = []  #: the fifos the running test planted (the alarm unblocks their readers)


def _unblock_readers() -> None:
    """Open every planted fifo for writing and close it: a reader blocked in ``open()`` (in any thread) gets
    the end of the file and moves on, so a regression fails the test instead of hanging pytest's exit."""
    for fifo in _FIFOS:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waiting (ENXIO), or gone
            pass


@pytest.fixture
def time_bound() -> Iterator[None]:
    """After :data:`HANG_LIMIT_S` seconds: raise :class:`StillRunning` in the main thread (out of a blocked
    ``open()`` there) and, every second from then on, unblock readers of the planted fifos."""
    fired: list[bool] = []

    def expire(signum, frame):
        _unblock_readers()
        if not fired:
            fired.append(True)
            raise StillRunning(f"still running after {HANG_LIMIT_S} s (blocked on a fifo?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, HANG_LIMIT_S, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _FIFOS.clear()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs_b")
    write_image(root / "imgs" / "a.png", 48, 48)
    return {"root": root, "ckpt": coco91_checkpoint(root / "c91.pth"), "imgs": root / "imgs",
            "coco": make_small_coco(root / "coco")}


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    _FIFOS.append(path)
    return path


def _previous(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    return out


def _map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.json"
    path.write_text(text)
    return path


# ------------------------------------------------------------------ fifos among a dataset's files (no hang)
def test_eval_coco_image_fifo(world, tmp_path, time_bound):
    coco = Path(shutil.copytree(world["coco"], tmp_path / "coco"))
    fifo = _fifo(coco / "val2017" / "0002.png")
    out = _previous(tmp_path)
    check_bad_input(["eval", "--resume", world["ckpt"], "--nheads", "4", "--coco-path", coco, "--eval-size", "64",
                     "--output-dir", out, "--no-progress"], names=[str(fifo), "not a regular file"], protect=[out])


def test_data_check_coco_image_fifo(world, tmp_path, time_bound):
    coco = Path(shutil.copytree(world["coco"], tmp_path / "coco"))
    fifo = _fifo(coco / "val2017" / "0003.png")
    check_bad_input(["data", "check", coco / ANN, "--images", coco / "val2017"],
                    names=[str(fifo), "not a regular file"])


def test_eval_coco_annotation_fifo(world, tmp_path, time_bound):
    coco = Path(shutil.copytree(world["coco"], tmp_path / "coco"))
    fifo = _fifo(coco / ANN)
    out = _previous(tmp_path)
    check_bad_input(["eval", "--resume", world["ckpt"], "--nheads", "4", "--coco-path", coco, "--eval-size", "64",
                     "--output-dir", out, "--no-progress"], names=[str(fifo), "not a regular file"], protect=[out])


def test_data_check_yolo_label_fifo(tmp_path, time_bound):
    root = write_yolo(tmp_path / "yolo")
    fifo = _fifo(root / "labels" / "val" / "v1.txt")
    check_bad_input(["data", "check", root], names=[str(fifo), "not a regular file"])


def test_eval_yolo_label_fifo(world, tmp_path, time_bound):
    root = write_yolo(tmp_path / "yolo")
    fifo = _fifo(root / "labels" / "val" / "v2.txt")
    out = _previous(tmp_path)
    check_bad_input(["eval", "--resume", world["ckpt"], "--nheads", "4", "--yolo-root", root, "--eval-size", "64",
                     "--output-dir", out, "--no-progress"], names=[str(fifo), "not a regular file"], protect=[out])


def test_data_check_panoptic_png_fifo(tmp_path, time_bound):
    files = write_panoptic(tmp_path / "pan", 1)
    fifo = _fifo(files.png(1))
    check_bad_input(["data", "check", files.root, "--panoptic"], names=[str(fifo), "not a regular file"])


def test_eval_voc_annotation_fifo(world, tmp_path, time_bound):
    voc = write_voc(tmp_path / "voc")
    fifo = _fifo(voc / "VOC2007" / "Annotations" / "000009.xml")
    out = _previous(tmp_path)
    check_bad_input(["eval", "--resume", world["ckpt"], "--nheads", "4", "--voc-root", voc, "--eval-size", "64",
                     "--class-map", "coco-voc", "--output-dir", out, "--no-progress"],
                    names=[str(fifo), "not a regular file"], protect=[out])


def test_export_validate_images_fifo(world, tmp_path, time_bound):
    images = Path(shutil.copytree(world["coco"] / "val2017", tmp_path / "images"))
    fifo = _fifo(images / "0001.png")
    target = tmp_path / "model.onnx"
    target.write_bytes(b"earlier artifact")
    check_bad_input(["export", "--resume", world["ckpt"], "--nheads", "4", "--format", "onnx", "--input-size", "64x64",
                     "--output", target, "--validate-images", images], names=[str(fifo), "not a regular file"],
                    protect=[target])


# ------------------------------------------------------------------------------ ids and sizes in range
@pytest.mark.parametrize("text,names", [
    ('{"person": 100000000000000000000000}', ["map.json", "'person'", "class id 100000000000000000000000",
                                              "outside 0..65535"]),
    ('{"person": -5, "dog": 0}', ["map.json", "'person'", "class id -5 is outside 0..65535"]),
    ('{"\u00b2": "x"}', ["map.json", "unknown model class name '²'"]),
], ids=["target-id-10e23", "negative-target-id", "superscript-key"])
def test_predict_class_map_ids(world, tmp_path, text, names):
    """``predict --class-map``: a huge target id built a names tuple of that length (MemoryError or the OOM
    killer), a negative one dropped the class as "outside the map" (exit 0), "²" an ``int()`` error."""
    out = _previous(tmp_path)
    check_bad_input(["predict", world["imgs"], "--resume", world["ckpt"], "--nheads", "4", "--threshold", "0",
                     "--class-map", _map(tmp_path, text), "--output-dir", out], names=names, protect=[out])
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_eval_and_predict_refuse_the_same_negative_map(world, tmp_path):
    """One check for both commands: eval refused the negative id (not a dataset id), predict now does too."""
    path = _map(tmp_path, '{"person": -5}')
    voc = write_voc(tmp_path / "voc")
    for args in (["eval", "--voc-root", voc, "--eval-size", "64", "--no-progress"], ["predict", world["imgs"]]):
        check_bad_input([*args, "--resume", world["ckpt"], "--nheads", "4", "--class-map", path,
                         "--output-dir", tmp_path / args[0]], names=["map.json", "class id -5 is outside 0..65535"])


def test_yolo_names_id_huge(world, tmp_path):
    root = write_yolo(tmp_path / "yolo")
    (root / "data.yaml").write_text("val: images/val\nnames: {0: cat, 100000000000000000000000: dog}\n")
    check_bad_input(["data", "check", root], names=["data.yaml", "'names'", "outside 0..65535"])


def test_coco_category_id_huge(world, tmp_path):
    coco = Path(shutil.copytree(world["coco"], tmp_path / "coco"))
    data = json.loads((coco / ANN).read_text())
    data["categories"].append({"id": 10**12, "name": "huge"})
    (coco / ANN).write_text(json.dumps(data))
    out = _previous(tmp_path)
    check_bad_input(["eval", "--resume", world["ckpt"], "--nheads", "4", "--coco-path", coco, "--eval-size", "64",
                     "--output-dir", out, "--no-progress"],
                    names=["instances_val2017.json", "categories[3]", "1000000000000 is outside 0..65535"],
                    protect=[out])


@pytest.mark.parametrize("size", ["1x1", "31x64", "64x100000"])
def test_predict_input_size_range(world, tmp_path, size):
    """``--input-size 1x1`` ended in an internal torch assert ("please report a bug to PyTorch")."""
    out = _previous(tmp_path)
    check_bad_input(["predict", world["imgs"], "--resume", world["ckpt"], "--nheads", "4", "--input-size", size,
                     "--output-dir", out], names=["--input-size", "32..16384", size], exit_code=2, protect=[out])


def test_voc_size_not_a_number(world, tmp_path):
    """``<height>inf</height>`` was ``OverflowError: cannot convert float infinity to integer``."""
    voc = write_voc(tmp_path / "voc")
    xml = voc / "VOC2007" / "Annotations" / "000005.xml"
    xml.write_text(xml.read_text().replace("<height>50</height>", "<height>inf</height>"))
    check_bad_input(["data", "check", voc], names=["000005.xml", "<height>", "'inf'", "whole number of pixels"])


# ------------------------------------------------------------------------------- scale of an image's dtype
def test_predict_float_tiff_outside_0_1(world, tmp_path):
    """A float TIFF holding 0..255 was divided by 65535 (the model saw black), exit 0."""
    images = tmp_path / "imgs"
    images.mkdir()
    PIL.Image.fromarray(np.full((48, 48), 200.0, np.float32), mode="F").save(images / "f255.tif")
    out = _previous(tmp_path)
    check_bad_input(["predict", images, "--resume", world["ckpt"], "--nheads", "4", "--output-dir", out],
                    names=["f255.tif", "mode F", "200..200", "float images are read as 0..1"], protect=[out])


def test_float_image_in_0_1_is_read_as_0_1(tmp_path):
    """The rule's other side: a float image in 0..1 is scaled by 255 (0.5 -> 128), a 16-bit one by 65535."""
    from detr_core.data.coco import load_rgb_tensor

    PIL.Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(tmp_path / "half.tif")
    PIL.Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "white16.png")
    assert load_rgb_tensor(tmp_path / "half.tif").unique().tolist() == [128]
    assert load_rgb_tensor(tmp_path / "white16.png").unique().tolist() == [255]


# ------------------------------------------------------------------------------- names the terminal sees
def test_predict_superscript_stem_with_save_json(world, tmp_path):
    """``².png`` with ``--save-json``: the stem passed ``isdigit`` and then failed ``int()`` (an
    ``invalid literal for int()`` line after every picture was written); now ids are 1..N."""
    images = tmp_path / "imgs"
    write_image(images / "\u00b2.png", 48, 48)
    write_image(images / "7.png", 48, 48)
    out = tmp_path / "pred"
    result = run_cli(["predict", images, "--resume", world["ckpt"], "--nheads", "4", "--threshold", "0",
                      "--save-json", "--output-dir", out])
    assert result.exit_code == 0, result.output
    assert {r["image_id"] for r in json.loads((out / "detections.json").read_text())} <= {1, 2}


def test_predict_summary_line_escapes_a_file_name(world, tmp_path):
    """A picture named with a terminal escape: predict's summary line shows ``\\x1b``, not the escape."""
    images = tmp_path / "imgs"
    write_image(images / "red\x1b[31m.png", 48, 48)
    result = run_cli(["predict", images, "--resume", world["ckpt"], "--nheads", "4", "--output-dir", tmp_path / "p"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "red\\x1b[31m.png" in result.output


def test_data_check_yolo_image_fifo(tmp_path, time_bound):
    """A fifo named like an image among a YOLO split's images was skipped in silence (exit 0)."""
    root = write_yolo(tmp_path / "yolo")
    fifo = _fifo(root / "images" / "val" / "v3.png")
    check_bad_input(["data", "check", root], names=[str(fifo), "not a regular file"])


def test_memory_error_is_a_line_that_says_so(world, tmp_path, monkeypatch):
    """Whatever still runs out of memory: one line saying so, not ``MemoryError: MemoryError``."""
    import detr_core.data.class_map

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(detr_core.data.class_map, "load_class_map", exhausted)
    check_bad_input(["predict", world["imgs"], "--resume", world["ckpt"], "--nheads", "4", "--class-map", "coco-voc",
                     "--output-dir", tmp_path / "p"], names=["out of memory (MemoryError)", "sizes, counts and ids"])


# ------------------------------------------------------------------------------ ceilings of count options
@pytest.mark.parametrize("args,option", [
    (["eval", "--num-workers", "1000000000"], "--num-workers"),
    (["eval", "--eval-size", "1000000000"], "--eval-size"),
    (["predict", "imgs", "--batch-size", "1000000000"], "--batch-size"),
    (["train", "--hidden-dim", "1000000000"], "--hidden-dim"),
    (["train", "--num-workers", "100000"], "--num-workers"),
    (["train", "--nproc", "100000"], "--nproc"),
    (["data", "shapes", "--image-size", "100000"], "--image-size"),
    (["data", "shapes", "--train-count", "1000000000"], "--train-count"),
], ids=["eval-workers", "eval-size", "predict-batch", "train-hidden-dim", "train-workers", "train-nproc",
        "shapes-image-size", "shapes-count"])
def test_count_options_have_a_ceiling(tmp_path, args, option):
    """A worker, process, batch or size count has a maximum: each of these asked for a machine's worth of
    processes or memory before anything said no."""
    check_bad_input([*args, "--output-dir" if args[0] != "data" else "--out", tmp_path / "o"],
                    names=[option, "1000000000" if "1000000000" in args else "100000"], exit_code=2)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_config_yaml_model_size_has_a_ceiling(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  hidden_dim: 1000000000\n")
    check_bad_input(["train", "--config", config, "--output-dir", tmp_path / "o"],
                    names=["c.yaml", "hidden_dim", "1000000000"])


@pytest.mark.parametrize("value", ['"64"', "64.5", "-64", "1e400"], ids=["string", "fraction", "negative", "1e400"])
def test_eval_image_size_not_whole_pixels(world, tmp_path, value):
    """An ``images[]`` height that is not a whole number of pixels: ``"64"``, ``64.5`` and ``-64`` skipped the
    stated-size check in silence (eval scored boxes in another frame, exit 0), ``1e400`` was an
    ``OverflowError`` line."""
    coco = Path(shutil.copytree(world["coco"], tmp_path / "coco"))
    data = json.loads((coco / ANN).read_text())
    data["images"][0]["height"] = "PLACEHOLDER"
    (coco / ANN).write_text(json.dumps(data).replace('"PLACEHOLDER"', value))
    out = _previous(tmp_path)
    check_bad_input(["eval", "--resume", world["ckpt"], "--nheads", "4", "--coco-path", coco, "--eval-size", "64",
                     "--output-dir", out, "--no-progress"],
                    names=["instances_val2017.json", "images[0] (id 1)", "'height'", "not a whole number of pixels"],
                    protect=[out])
