"""A COCO-id model scored on a hand-made VOCdevkit: with ``--class-map coco-voc`` the 12 COCO numbers equal
pycocotools' evaluation of the same detections remapped by hand; without it, one WARNING names the
mismatched ids. The model is a real ``nn.Module`` returning fixed outputs whose COCO-id predictions are
known (logits and boxes chosen per image and query)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from detr_core.config import ModelConfig
from detr_core.data.sources import DatasetSource
from detr_core.data.voc import voc_to_coco
from detr_core.training.eval_run import EvalConfig, evaluate_model
from tests.data import write_voc
from tests.evaluation.direct_cocoeval import cocoeval_stats

#: stem -> (h, w, objects): VOC 1-based boxes
SAMPLES = {
    "000001": (80, 100, [("person", 0, 10, 10, 50, 70), ("dog", 0, 55, 30, 95, 75)]),
    "000002": (90, 60, [("car", 0, 5, 20, 55, 80)]),
    "000003": (64, 64, [("chair", 0, 2, 2, 30, 40), ("person", 0, 30, 10, 60, 60), ("sofa", 0, 1, 40, 64, 64)]),
    "000004": (70, 90, [("aeroplane", 0, 20, 10, 80, 50)]),
}
#: Written out by hand from the issue (COCO id -> VOC index in the standard order), not from detrtool's table.
COCO_TO_VOC = {5: 0, 2: 1, 16: 2, 9: 3, 44: 4, 6: 5, 3: 6, 17: 7, 62: 8, 21: 9, 67: 10, 18: 11, 19: 12, 4: 13,
               1: 14, 64: 15, 20: 16, 63: 17, 7: 18, 72: 19}
#: per image, per query: (COCO id, logit, normalised cx, cy, w, h); ids 25 (giraffe), 13 (stop sign) are not VOC
PREDICTIONS = [
    [(1, 6.0, 0.3, 0.5, 0.4, 0.75), (18, 5.0, 0.75, 0.65, 0.4, 0.55), (25, 7.0, 0.5, 0.5, 0.2, 0.2),
     (3, 2.0, 0.2, 0.2, 0.1, 0.1)],
    [(3, 4.0, 0.5, 0.55, 0.8, 0.6), (13, 6.0, 0.4, 0.4, 0.3, 0.3), (1, 1.0, 0.6, 0.6, 0.2, 0.2),
     (62, 3.0, 0.5, 0.5, 0.5, 0.5)],
    [(62, 5.0, 0.25, 0.33, 0.45, 0.6), (1, 4.0, 0.7, 0.55, 0.45, 0.8), (63, 3.5, 0.5, 0.8, 1.0, 0.4),
     (25, 2.0, 0.5, 0.5, 0.5, 0.5)],
    [(5, 6.0, 0.55, 0.43, 0.65, 0.55), (5, 1.5, 0.3, 0.3, 0.2, 0.2), (13, 5.0, 0.5, 0.5, 0.9, 0.9),
     (18, 0.5, 0.5, 0.5, 0.3, 0.3)],
]


def _outputs() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.full((len(PREDICTIONS), 4, 92), -2.0)
    boxes = torch.zeros(len(PREDICTIONS), 4, 4)
    for i, queries in enumerate(PREDICTIONS):
        for q, (cls, logit, *box) in enumerate(queries):
            logits[i, q, cls] = logit
            boxes[i, q] = torch.tensor(box)
    return logits, boxes


class FixedOutputs(nn.Module):
    """A DETR stand-in returning the next images' fixed outputs on each call (loader order)."""

    def __init__(self) -> None:
        super().__init__()
        logits, boxes = _outputs()
        self.register_buffer("logits", logits)
        self.register_buffer("boxes", boxes)
        self.config = ModelConfig(num_classes=91, dec_layers=1, aux_loss=False)
        self.num_classes, self.aux_loss, self.position = 91, False, 0

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        start, self.position = self.position, self.position + images.shape[0]
        return {"pred_logits": self.logits[start:self.position], "pred_boxes": self.boxes[start:self.position]}


@pytest.fixture()
def voc(tmp_path):
    root = write_voc(tmp_path, SAMPLES)
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("\n".join(sorted(SAMPLES)) + "\n")
    return root


def _config(voc, out, class_map):
    return EvalConfig(checkpoint="fixed-outputs", data=DatasetSource(voc_root=str(voc), class_map=class_map),
                      output_dir=str(out), batch_size=2, evaluator="pycocotools", transforms="detr", eval_size=64,
                      progress=False)


def _by_hand(gt: dict) -> tuple[list[dict], int]:
    """Softmax, best real class, xyxy pixels of each image, COCO ids -> VOC ids; others dropped."""
    logits, boxes = _outputs()
    results, dropped = [], 0
    for i, image in enumerate(sorted(gt["images"], key=lambda im: im["id"])):
        h, w = image["height"], image["width"]
        scores, labels = logits[i].softmax(-1)[:, :-1].max(-1)
        for score, label, (cx, cy, bw, bh) in zip(scores.tolist(), labels.tolist(), boxes[i].tolist(), strict=True):
            if label not in COCO_TO_VOC:
                dropped += 1
                continue
            x0, y0 = (cx - bw / 2) * w, (cy - bh / 2) * h
            results.append({"image_id": image["id"], "category_id": COCO_TO_VOC[label], "score": score,
                            "bbox": [x0, y0, (cx + bw / 2) * w - x0, (cy + bh / 2) * h - y0]})
    return results, dropped


def _pycocotools(gt: dict, results: list[dict]) -> list[float]:
    return cocoeval_stats(gt, results, "bbox")


def test_coco_voc_map_equals_pycocotools_on_detections_remapped_by_hand(voc, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        result = evaluate_model(FixedOutputs(), _config(voc, tmp_path, "coco-voc"))
    gt = voc_to_coco(voc, "test")
    expected, dropped = _by_hand(gt)
    assert dropped == 4 and len(expected) == 12
    stats = result.metrics["coco_eval_bbox"]["stats"]
    assert stats == pytest.approx(_pycocotools(gt, expected), abs=1e-9)
    assert stats[1] > 0.5  # the mapped detections hit their boxes: a real score, not zeros
    assert result.metrics["class_map"] == {"name": "coco-voc", "dropped": 4, "kept": 12}
    assert any("4 of 16 detections" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "disagree" in r.getMessage()]
    written = json.loads((tmp_path / "detections.json").read_text())
    assert sorted(d["category_id"] for d in written) == sorted(d["category_id"] for d in expected)


def test_without_the_map_one_warning_names_the_mismatched_ids(voc, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result = evaluate_model(FixedOutputs(), _config(voc, tmp_path, None))
    warnings = [r.getMessage() for r in caplog.records if "disagree" in r.getMessage()]
    assert len(warnings) == 1
    assert "0: model" not in warnings[0]  # COCO id 0 is unused: not a shared id
    assert "1: model 'person' vs dataset 'bicycle'" in warnings[0] and "--class-map coco-voc" in warnings[0]
    assert "18 of the 18 ids" in warnings[0]
    assert result.metrics["coco_eval_bbox"]["AP50"] < 0.2  # COCO ids read as VOC ids: near-meaningless
