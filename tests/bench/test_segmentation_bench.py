"""bench on a segmentation model: every row's accuracy carries mask AP and PQ beside box AP, and an exported
runtime's PQ and mask AP equal eager's (1e-6) on a tiny panoptic set whose ground truth is eager's own
prediction (so eager scores PQ 1 and any disagreement of the artifact would show)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from bench.accuracy import accuracy_metrics, collect_outputs, outputs_max_abs_diff
from bench.data import load_eval_set
from bench.report import markdown_table
from bench.run import BenchConfig, run_bench
from bench.runtimes import eager_bench_runtime
from bench.segm import detection_masks
from detr_core import ModelConfig, build_model
from detr_core.data.shapes import ShapesParams, generate_shapes
from detr_core.data.sources import DatasetSource
from detr_core.postprocess import postprocess_tensors
from detr_core.segmentation.panoptic_format import write_png
from detr_core.segmentation.postprocess import panoptic_predictions

CANVAS = (80, 96)  # the 64x64 shapes images padded into it: the masks' padding is live
CONFIG = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                     dim_feedforward=64, num_queries=8, num_classes=9, masks=True)


@pytest.fixture(scope="module")
def segm_model():
    torch.manual_seed(0)
    model = build_model(CONFIG).eval()
    with torch.no_grad():
        model.detr.class_embed.weight *= 40  # confident, varied classes: segments above the 0.85 threshold
    return model


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _write_truth(root: Path, model, evalset) -> None:
    """Replace the val split's panoptic and instance ground truth by eager's predictions (ids from 1)."""
    out = collect_outputs(eager_bench_runtime(model), evalset)
    logits, masks, sizes = (torch.from_numpy(a) for a in (out.logits, out.masks, out.sizes))
    panoptic = json.loads((root / "annotations" / "panoptic_val2017.json").read_text())
    is_thing = {int(c["id"]): bool(c["isthing"]) for c in panoptic["categories"]}
    canvas = torch.tensor([list(CANVAS)])
    scores, labels, _ = postprocess_tensors(logits, torch.from_numpy(out.boxes), evalset.orig_sizes)
    annotations, instances = [], []
    for i, image_id in enumerate(evalset.image_ids):
        (pan,) = panoptic_predictions({"pred_logits": logits[i:i + 1], "pred_masks": masks[i:i + 1]}, sizes[i:i + 1],
                                      evalset.orig_sizes[i:i + 1], is_thing=is_thing, input_sizes=canvas)
        name = f"{image_id:012d}.png"
        write_png(root / "panoptic_val2017" / name, pan["segment_ids"] + 1 if pan["segments_info"] else pan["segment_ids"])
        info = [{**s, "id": s["id"] + 1, "iscrowd": 0} for s in pan["segments_info"]]
        annotations.append({"image_id": image_id, "file_name": name, "segments_info": info})
        binary = detection_masks(masks[i], tuple(sizes[i].tolist()), CANVAS, tuple(evalset.orig_sizes[i].tolist()))
        for q in torch.nonzero(scores[i] > 0.7).flatten().tolist():
            if not is_thing[int(labels[i, q])]:
                continue  # instances are things: box and mask AP are COCO's instance metrics
            rle = _rle(binary[q, 0].numpy())
            instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": int(labels[i, q]),
                              "segmentation": rle, "area": float(mask_utils.area(rle)), "iscrowd": 0,
                              "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    assert sum(len(a["segments_info"]) for a in annotations) >= 3 and len(instances) >= 3
    panoptic["annotations"] = annotations
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(panoptic))
    coco = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    coco["annotations"] = instances
    coco["categories"] = [{k: v for k, v in c.items() if k != "isthing"} for c in panoptic["categories"]
                          if c["isthing"]]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(coco))


@pytest.fixture(scope="module")
def panoptic_source(segm_model, tmp_path_factory) -> DatasetSource:
    root = generate_shapes(tmp_path_factory.mktemp("segm-bench"), ShapesParams(seed=3, image_size=64, train_count=2,
                                                                              val_count=3), progress=False, panoptic=True)
    source = DatasetSource(coco_path=str(root))
    _write_truth(root, segm_model, load_eval_set(source, canvas=CANVAS, batch_size=2, masks=True))
    return source


def test_bench_rows_carry_mask_ap_and_pq_equal_to_eager(segm_model, panoptic_source, tmp_path):
    evalset = load_eval_set(panoptic_source, canvas=CANVAS, batch_size=2, masks=True)
    assert evalset.panoptic is not None and all(
        evalset.prepare([im])[1].any() for im in evalset.images)  # every image padded
    config = BenchConfig(formats=("eager", "onnx", "torch-export"), warmup=0, runs=1, padded=False, peak_size=0)
    report = run_bench(segm_model, evalset, config, cache_dir=tmp_path / "cache", calibration=lambda: iter(()))
    eager = report.row("eager")
    assert eager.pq == pytest.approx(100.0, abs=1e-6)  # the ground truth is eager's own panoptic prediction
    assert eager.mask_ap > 50.0
    # torch.export runs eager's kernels: equal to 1e-6. ONNX Runtime's outputs differ by ~1e-5, enough to give a
    # pixel where two queries' mask logits tie to the other query: PQ within 1e-3 (measured 4.2e-4)
    for name, within in (("torch-export", 1e-6), ("onnx", 1e-3)):
        row = report.row(name)
        assert row.ok and not row.failures, row.error
        assert row.max_abs_diff <= 1e-4  # pred_masks included
        for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mask_AP", "mask_AP50", "AP"):
            assert abs(row.metrics[key] - eager.metrics[key]) <= within, (name, key)
        assert row.notes["delta_PQ"] == pytest.approx(100 * (row.metrics["PQ"] - eager.metrics["PQ"]))
    row = report.row("onnx")
    row.notes["delta_PQ"] = -0.2  # an fp32 row losing 0.2 PQ points fails the run (--max-map-drop 0.1)
    row.judge(max_map_drop=0.1, tolerance=1e-4)
    assert row.failures == ["onnx (cpu): |ΔPQ| 0.200 > 0.1"]
    table = markdown_table(report)
    assert "| mask AP | PQ |" in table and f"| {eager.mask_ap:.2f} | {eager.pq:.2f} |" in table


def test_segm_metrics_see_a_mask_change(segm_model, panoptic_source):
    """The same boxes and classes with the first query's mask logits raised by 3 (it takes pixels from the
    others): box AP unchanged, mask AP and PQ drop."""
    evalset = load_eval_set(panoptic_source, canvas=CANVAS, batch_size=2, masks=True)
    eager = eager_bench_runtime(segm_model)
    ref = collect_outputs(eager, evalset)

    def raised(images, mask):
        logits, boxes, masks = eager(images, mask)
        return logits, boxes, torch.cat([masks[:, :1] + 3.0, masks[:, 1:]], 1)

    shifted = collect_outputs(raised, evalset)
    scale = max(1.0, float(np.abs(ref.masks).max()))  # masks compare over their scale (as export validation)
    assert outputs_max_abs_diff(ref, shifted) == pytest.approx(3.0 / scale, rel=1e-5)
    a, b = accuracy_metrics(ref, evalset), accuracy_metrics(shifted, evalset)
    assert a["AP"] == b["AP"]
    assert b["PQ"] < a["PQ"] - 0.05 and b["mask_AP"] < a["mask_AP"]
