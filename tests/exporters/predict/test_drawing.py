"""Drawing detections and attention grids: sizes, colours, readability helpers, PNG output."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from exporters.predict.drawing import (
    class_color,
    draw_detections,
    font_size,
    label_text,
    save_attention_grid,
    save_png,
    text_color,
)


def _boxes():
    return torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 150.0, 95.0]]), torch.tensor([0, 3]), torch.tensor([0.93, 0.51])


def test_draw_detections_keeps_size_and_marks_the_box_edges():
    image = torch.full((3, 100, 160), 255, dtype=torch.uint8)
    boxes, labels, scores = _boxes()
    out = draw_detections(image, boxes, labels, scores, ("circle", "square", "triangle", "star"))
    assert out.shape == image.shape and out.dtype == torch.uint8
    assert not torch.equal(out[:, 40, 10], image[:, 40, 10])  # left edge of the first box
    assert torch.equal(out[:, 99, 159], image[:, 99, 159])  # far from every box
    assert torch.equal(image, torch.full_like(image, 255))  # input untouched


def test_draw_detections_without_boxes_returns_a_copy():
    image = torch.zeros((3, 20, 30), dtype=torch.uint8)
    out = draw_detections(image, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert torch.equal(out, image) and out.data_ptr() != image.data_ptr()


def test_out_of_image_and_degenerate_boxes_are_clipped_not_refused():
    image = torch.zeros((3, 50, 50), dtype=torch.uint8)
    boxes = torch.tensor([[-10.0, -5.0, 80.0, 90.0], [20.0, 20.0, 19.0, 19.0]])
    out = draw_detections(image, boxes, torch.tensor([1, 2]), torch.tensor([0.9, 0.8]))
    assert out.shape == image.shape and out.any()


def test_labels_fall_back_to_ids_and_colours_are_stable_and_readable():
    assert label_text(2, 0.934, ("a", "b", "c")) == "c 0.93"
    assert label_text(5, 0.5, ()) == "5 0.50"
    assert class_color(4) == class_color(4) and len({class_color(i) for i in range(20)}) == 20
    assert text_color((255, 255, 0)) == (0, 0, 0) and text_color((20, 20, 120)) == (255, 255, 255)
    assert font_size(128, 128) < font_size(800, 1200) <= 40


def test_png_and_attention_grid_files(tmp_path):
    image = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    boxes, labels, scores = _boxes()
    png = save_png(image, tmp_path / "a" / "x.png")
    with PIL.Image.open(png) as img:
        assert torch.equal(torch.from_numpy(np.array(img)).permute(2, 0, 1), image)
    grid = save_attention_grid(image, torch.rand(2, 64, 96), boxes, labels, scores, tmp_path / "att.png")
    with PIL.Image.open(grid) as img:
        assert img.format == "PNG" and img.width > 96
