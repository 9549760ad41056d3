"""Fixtures of the exporter tests: the tiny reference model, a folder of differently sized real images,
a confident variant of the tiny model, and a session cache of exported artifacts."""

from __future__ import annotations

import copy
from pathlib import Path

import PIL.Image
import pytest
import torch

from detr_core import load_checkpoint
from detr_core.data.shapes import ShapesParams, generate_shapes
from exporters import export, load_runtime, prepare
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
def confident_model(tiny_model, real_images):
    """The tiny model with a class head that makes confident, varied detections.

    Training even a tiny DETR to confident detections takes minutes on 2 cores, beyond this suite's
    budget, and the random tiny model scores every query ~1/8 (nothing to compare above a threshold).
    Its decoder states differ little between queries, so the new head reads them along their main
    directions of variation (SVD of the centred states on a fixed input), scaled so that scores are
    high and labels vary by query and image (orthogonal to the mean state, so logits stay O(10) without
    cancellation): a deterministic stand-in for a trained model."""
    model = copy.deepcopy(tiny_model)
    states = []
    hook = model.class_embed.register_forward_hook(lambda mod, inp, out: states.append(inp[0][-1]))
    images, mask, _ = prepare(real_images, canvas=(128, 160), size=128, max_size=160)
    with torch.no_grad():
        model(images, mask)
        hook.remove()
        flat = states[0].reshape(-1, states[0].shape[-1])
        mean = flat.mean(0)
        directions = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:model.num_classes]
        unit = mean / mean.norm()
        directions = directions - (directions @ unit)[:, None] * unit  # no large common term to cancel
        weight = directions / ((flat - mean) @ directions.T).std(0)[:, None] * 2.5
        model.class_embed.weight.zero_()
        model.class_embed.weight[:-1] = weight
        model.class_embed.bias[:-1] = -(weight @ mean)
        model.class_embed.bias[-1] = -4.0
    names = ("circle", "square", "triangle", "star", "ellipse", "hexagon", "blob")
    model.config = model.config.replace(class_names=names)
    return model.eval()


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
