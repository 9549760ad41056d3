"""Bad OpenVINO IRs and options: ``predict --model X.xml`` and ``export --format openvino`` give one error line
naming the file (or option), no traceback, and leave earlier outputs (predictions, a good IR pair) unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporters import export
from exporters.openvino import save_ir, weights_path
from tests.cli.bad_input import check_bad_input


@pytest.fixture(scope="module")
def good_ir(tiny_model, tmp_path_factory) -> Path:
    return export(tiny_model, "openvino", tmp_path_factory.mktemp("ov-good") / "model.xml", input_size=(64, 64),
                  validate=False).path


def _pair(good: Path, folder: Path, name: str) -> Path:
    xml = folder / f"{name}.xml"
    shutil.copy(good, xml)
    shutil.copy(weights_path(good), weights_path(xml))
    return xml


def _flip_bin(xml: Path) -> None:
    data = bytearray(weights_path(xml).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(b ^ 0xFF for b in data[middle:middle + 4096])
    weights_path(xml).write_bytes(bytes(data))


def _foreign(xml: Path) -> None:
    """An IR OpenVINO itself wrote, without detrtool metadata."""
    import openvino as ov

    text, blob = save_ir(ov.Core().read_model(str(xml)))
    xml.write_text(text.replace('<detrtool value="', '<other value="'))
    weights_path(xml).write_bytes(blob)


BROKEN = {  # name -> how to break a copy of the good pair; the error line must name the file and the reason
    "flipped": (_flip_bin, ["flipped.xml", "content hash mismatch"]),
    "nobin": (lambda x: weights_path(x).unlink(), ["nobin.xml", "nobin.bin is missing"]),
    "shortbin": (lambda x: weights_path(x).write_bytes(weights_path(x).read_bytes()[:-8]),
                 ["shortbin.xml", "the IR needs"]),
    "halfxml": (lambda x: x.write_bytes(x.read_bytes()[: x.stat().st_size // 2]), ["halfxml.xml", "truncated"]),
    "text": (lambda x: x.write_text("just some text, not XML"), ["text.xml", "not an OpenVINO IR"]),
    "dtd": (lambda x: x.write_text(x.read_text().replace("<net ", '<!DOCTYPE net [<!ENTITY e "x">]><net ', 1)),
            ["dtd.xml", "DTD or entities"]),
    "foreign": (_foreign, ["foreign.xml", "no detrtool metadata"]),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_predict_refuses_a_broken_ir(name, good_ir, tmp_path):
    image = tmp_path / "in.png"
    import PIL.Image

    PIL.Image.new("RGB", (40, 30), (120, 40, 200)).save(image)
    previous = tmp_path / "predictions"
    previous.mkdir()
    (previous / "earlier.png").write_bytes(b"an earlier picture")
    xml = _pair(good_ir, tmp_path, name)
    breaker, names = BROKEN[name]
    breaker(xml)
    check_bad_input(["predict", image, "--model", xml, "--output-dir", previous], names=names, protect=[previous])


EXPORT_CASES = [  # (id, extra args, output name, names, exit code)
    ("wrong suffix for the format", [], "model.onnx", ["model.onnx", ".xml"], 1),
    ("onnx option given to openvino", ["--opset", "18"], "model.xml", ["--opset", "openvino"], 1),
    ("torchscript option given to openvino", ["--method", "trace"], "model.xml", ["--method", "openvino"], 1),
]


@pytest.mark.parametrize(("extra", "output", "names", "code"), [c[1:] for c in EXPORT_CASES],
                         ids=[c[0] for c in EXPORT_CASES])
def test_export_openvino_bad_options(extra, output, names, code, good_ir, tiny_checkpoint_path, tmp_path):
    existing = _pair(good_ir, tmp_path, "model")
    protect = [existing, weights_path(existing)]
    check_bad_input(["export", "--resume", tiny_checkpoint_path, "--nheads", "4", "--format", "openvino",
                     "--input-size", "64x64", "--no-validate", "--output", tmp_path / output, *extra],
                    names=names, exit_code=code, protect=protect)
