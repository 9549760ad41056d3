"""Fixtures of the exporter tests: the tiny reference model, a folder of differently sized real images,
the session's trained tiny model (confident detections), and a session cache of exported artifacts."""

from __future__ import annotations

from pathlib import Path

import PIL.Image
import pytest

from detr_core import load_checkpoint
from detr_core.data.shapes import ShapesParams, generate_shapes
from exporters import export, load_runtime
from exporters.validation_inputs import crop_fraction, read_folder

CANVASES = {1: (96, 128), 2: (128, 160)}  # batch size -> canvas: two canvases, batch 1 and 2
VARIANTS = {
    "torchscript": ("torchscript", {}),
    "torchscript-trace": ("torchscript", {"method": "trace"}),
    "onnx-dynamo": ("onnx", {"exporter": "dynamo", "opset": 18}),
    "onnx-legacy": ("onnx", {"exporter": "legacy", "opset": 17}),
    "torch-export": ("torch-export", {}),
}
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx", "torch-export": ".pt2"}


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint_path):
    return load_checkpoint(tiny_checkpoint_path, nheads=4)


@pytest.fixture(scope="session")
def trained_model(trained_shapes_checkpoint):
    """The tiny DETR trained in the session to confident detections (``trained_shapes`` in tests/conftest.py)."""
    return load_checkpoint(trained_shapes_checkpoint).eval()


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory) -> Path:
    """Six shapes val images cropped to different sizes and aspect ratios (PNG)."""
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), ShapesParams(train_count=0, val_count=6),
                           progress=False)
    out = tmp_path_factory.mktemp("validate_images")
    crops = ((1.0, 1.0), (0.7, 1.0), (1.0, 0.55), (0.5, 0.9), (0.85, 0.6), (0.4, 1.0))
    for i, image in enumerate(read_folder(root / "val2017", count=6)):
        cropped = crop_fraction(image, *crops[i])
        PIL.Image.fromarray(cropped.permute(1, 2, 0).numpy()).save(out / f"{i:02d}.png")
    return out


@pytest.fixture(scope="session")
def real_images(images_dir):
    return read_folder(images_dir, count=6)


@pytest.fixture(scope="session")
def artifacts(tiny_model, images_dir, tmp_path_factory):
    """``artifacts(variant, batch)`` -> ExportResult, exported (and validated) once per session."""
    cache: dict = {}
    folder = tmp_path_factory.mktemp("artifacts")

    def get(variant: str, batch: int, *, with_postprocess: bool = False):
        key = (variant, batch, with_postprocess)
        if key not in cache:
            fmt, options = VARIANTS[variant]
            path = folder / f"{variant}-b{batch}{'-post' if with_postprocess else ''}{SUFFIX[fmt]}"
            cache[key] = export(tiny_model, fmt, path, input_size=CANVASES[batch], batch_size=batch,
                                with_postprocess=with_postprocess, validate_images=images_dir, **options)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def runtimes(artifacts):
    """``runtimes(variant, batch, with_postprocess=False)`` -> loaded Runtime, once per session (the
    TorchScript and torch.export runtimes specialise on their first calls; pay that once)."""
    cache: dict = {}

    def get(variant: str, batch: int, *, with_postprocess: bool = False):
        key = (variant, batch, with_postprocess)
        if key not in cache:
            cache[key] = load_runtime(artifacts(variant, batch, with_postprocess=with_postprocess).path)
        return cache[key]

    return get


SMALL_CONFIG = {"backbone": "small_cnn", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 1,
                "dim_feedforward": 64, "num_queries": 5, "num_classes": 3}
SMALL_CANVAS = (64, 96)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A detrtool checkpoint of a small DETR (small CNN backbone, ~1.3 M parameters): fast to export."""
    import torch

    from detr_core import ModelConfig, build_model, save_checkpoint
    from detr_core.checkpoint import model_payload

    config = ModelConfig(**SMALL_CONFIG)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small") / "small.pth"
    return save_checkpoint(path, model_payload(build_model(config), config))


@pytest.fixture(scope="session")
def small_artifacts(small_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The small checkpoint exported once per format (ONNX: legacy exporter), keyed by suffix; tests copy
    them before changing anything."""
    model = load_checkpoint(small_checkpoint)
    folder = tmp_path_factory.mktemp("small_artifacts")
    made = {}
    for fmt, suffix, options in (("onnx", ".onnx", {"exporter": "legacy", "opset": 17}), ("torchscript", ".ts", {}),
                                 ("torch-export", ".pt2", {})):
        made[suffix] = export(model, fmt, folder / f"small{suffix}", input_size=SMALL_CANVAS, validate=False,
                              **options).path
    return made


@pytest.fixture(scope="session")
def small_images(tmp_path_factory) -> Path:
    """A folder of two small PNG images."""
    folder = tmp_path_factory.mktemp("small_images")
    for i, size in enumerate(((48, 64), (60, 40))):
        PIL.Image.new("RGB", size[::-1], (40 * i, 120, 200)).save(folder / f"img{i}.png")
    return folder
