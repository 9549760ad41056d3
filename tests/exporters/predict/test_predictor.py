"""The predictor: image reading, attention capture, detections in original pixels, runtime parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor
from torchvision.ops import box_iou

from detr_core import load_checkpoint, pad_images
from detr_core.cross_attention import capture_cross_attention, crop_to_image
from exporters.image_inputs import Failure, InputImage, collect_image_paths, read_image
from exporters.predict.model import PredictModel, open_checkpoint
from exporters.predict.run import ImageDetections, Predictor, select_detections
from tests.exporters.predict.images import BAD_FILES, ODD_SIZES, shapes_val_images, write_odd_images

CANVAS = (128, 128)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint_path):
    return load_checkpoint(tiny_checkpoint_path, nheads=4)


@pytest.fixture(scope="session")
def shapes_images(tmp_path_factory) -> list[Path]:
    return shapes_val_images(tmp_path_factory.mktemp("shapes"), count=3)


def test_odd_images_are_read_upright_rgb_and_bad_files_are_failures(tmp_path):
    paths = write_odd_images(tmp_path)
    for name, hw in ODD_SIZES.items():
        image = read_image(paths[name])
        assert isinstance(image, InputImage), name
        assert image.size == hw and image.pixels.dtype == torch.uint8 and image.pixels.shape[0] == 3
    for name in BAD_FILES:
        failure = read_image(paths[name])
        assert isinstance(failure, Failure) and failure.reason and str(tmp_path) not in failure.reason


def test_collect_image_paths_lists_folders_and_reports_missing(tmp_path):
    write_odd_images(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    paths, failures = collect_image_paths([tmp_path / "in", tmp_path / "in" / "notes.txt", tmp_path / "nope.png",
                                           tmp_path / "empty"])
    assert [p.name for p in paths] == sorted([*ODD_SIZES, *BAD_FILES]) + ["notes.txt"]
    assert {f.path.name for f in failures} == {"nope.png", "empty"}


def test_select_detections_thresholds_and_orders_by_score():
    scores = torch.tensor([0.2, 0.9, 0.75, 0.7, 0.95])
    assert select_detections(scores, 0.7).tolist() == [4, 1, 2]
    assert select_detections(scores, 0.7, top_k=2).tolist() == [4, 1]
    assert select_detections(scores, 0.99).numel() == 0


def test_cross_attention_maps_are_distributions_over_the_image_cells(tiny_model):
    images, mask = pad_images([torch.randn(3, 96, 128), torch.randn(3, 64, 64)])
    with capture_cross_attention(tiny_model) as capture, torch.no_grad():
        tiny_model(images, mask)
    maps = capture.maps()
    assert maps.shape == (2, tiny_model.num_queries, 3, 4)
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(2, tiny_model.num_queries))
    assert maps[1, :, 2:, :].abs().max() == 0 and maps[1, :, :, 2:].abs().max() == 0  # padding cells
    assert crop_to_image(maps[1], mask[1], (200, 300)).shape == (tiny_model.num_queries, 200, 300)
    assert not tiny_model.transformer.decoder.layers[-1].multihead_attn._forward_pre_hooks  # hooks removed


def _predict(model: PredictModel, images: list[InputImage], threshold: float, batch_size: int = 2):
    predictor = Predictor(model.runtime, model.spec, threshold=threshold, batch_size=batch_size)
    return [d for i in range(0, len(images), batch_size) for d in predictor.predict_images(images[i : i + batch_size])]


def _by_query(found: ImageDetections) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    order = found.queries.argsort()
    return found.queries[order], found.labels[order], found.boxes[order], found.scores[order]


@pytest.fixture(scope="session")
def runtimes(tiny_checkpoint_path) -> dict[str, PredictModel]:
    """The tiny reference checkpoint eager and exported (on the fly, as `predict --format` does) to a
    static 128x128 canvas with batch 2."""
    return {fmt: open_checkpoint(tiny_checkpoint_path, fmt=fmt, nheads=4, input_size=CANVAS, batch_size=2)
            for fmt in ("eager", "onnx", "torchscript")}


@pytest.fixture(scope="session")
def trained_runtimes(trained_shapes_checkpoint) -> dict[str, PredictModel]:
    """The session's trained tiny checkpoint (``trained_shapes``) eager and exported on the fly with batch 2,
    all on the 96x160 canvas of its recorded shapes resize rule (same padding, so the same features)."""
    return {fmt: open_checkpoint(trained_shapes_checkpoint, fmt=fmt, input_size=(96, 160), batch_size=2)
            for fmt in ("eager", "onnx", "torchscript", "openvino")}


def test_detections_agree_across_runtimes(trained_runtimes, trained_shapes_images):
    # A genuinely trained model at the normal 0.7 threshold, on the images it was trained on: every image has
    # confident detections, and they must be the same detections (label, box IoU, score) in every runtime.
    # Five images in batches of 2 also exercise the static batch fill.
    images = [read_image(p) for p in sorted(trained_shapes_images.glob("*.png"))[:5]]
    eager = _predict(trained_runtimes["eager"], images, threshold=0.7)
    assert all(len(d) >= 1 for d in eager), [len(d) for d in eager]
    assert all(bool((d.scores > 0.7).all()) for d in eager)
    for fmt in ("onnx", "torchscript", "openvino"):
        other = _predict(trained_runtimes[fmt], images, threshold=0.7)
        for mine, theirs in zip(eager, other, strict=True):
            q_a, labels_a, boxes_a, scores_a = _by_query(mine)
            q_b, labels_b, boxes_b, scores_b = _by_query(theirs)
            assert torch.equal(q_a, q_b) and torch.equal(labels_a, labels_b), fmt
            assert box_iou(boxes_a, boxes_b).diagonal().min() >= 0.99, fmt
            torch.testing.assert_close(scores_a, scores_b, atol=1e-4, rtol=0), fmt


def test_boxes_are_in_original_pixels_and_upright(runtimes, shapes_images):
    small = read_image(shapes_images[0])
    big = InputImage(small.path, small.pixels.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))
    found_small, found_big = _predict(runtimes["eager"], [small, big], threshold=0.0)
    assert big.size == (256, 256)
    _, _, boxes_small, _ = _by_query(found_small)
    _, _, boxes_big, _ = _by_query(found_big)
    torch.testing.assert_close(boxes_big, 2 * boxes_small, atol=3.0, rtol=0)
    assert boxes_big.min() >= -1 and boxes_big.max() <= 257


def test_attention_maps_follow_the_detections(tiny_checkpoint_path, shapes_images):
    model = open_checkpoint(tiny_checkpoint_path, nheads=4, input_size=CANVAS, attention=True)
    predictor = Predictor(model.runtime, model.spec, threshold=0.0, attention_runtime=model.attention,
                          attention_top_k=3)
    (found,) = predictor.predict_images([read_image(shapes_images[0])])
    assert found.attention.shape == (3, 128, 128)
    maps = model.attention.last_attention[0, found.queries[:3]]
    assert torch.allclose(found.attention.mean(dim=(-2, -1)), maps.mean(dim=(-2, -1)), atol=2e-3)
    predictor.threshold = 0.99  # nothing detected: no maps, no error
    (found,) = predictor.predict_images([read_image(shapes_images[0])])
    assert len(found) == 0 and found.attention is None
