"""Training, eval and predict read a YOLO set directly; ``--init`` with a class map keeps the mapped rows
of the class head (and the no-object row)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from click.testing import CliRunner
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cli.main import cli
from detr_core.data.class_map import COCO_VOC
from detr_core.data.voc import VOC_CLASSES
from detr_core.data.yolo import yolo_to_coco
from detr_core.training.run import build_run_model
from detr_core.training.train_config import resolve_train_config
from tests.data import write_voc
from tests.data.handmade import coco91_checkpoint, write_yolo

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--backbone", "small_cnn_gn", "--hidden-dim", "32", "--nheads", "2", "--enc-layers", "1", "--dec-layers", "2",
        "--dim-feedforward", "64", "--num-queries", "5", "--transforms", "shapes", "--image-size", "64"]


def _run(args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_train_eval_predict_read_a_yolo_set(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    _run(["train", "--yolo-root", root, "--output-dir", tmp_path / "run", "--epochs", "1", "--batch-size", "2",
          "--num-workers", "0", "--no-progress", *TINY])
    checkpoint = tmp_path / "run" / "checkpoint.pth"
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 0 and "test_AP" in record and "test_loss_ce_unscaled" in record
    _run(["eval", "--resume", checkpoint, "--yolo-root", root, "--output-dir", tmp_path / "eval", "--no-progress",
          "--evaluator", "pycocotools"])
    gt = yolo_to_coco(root, "val", tmp_path / "val.json")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "val.json"))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "eval" / "detections.json")), iouType="bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == len(gt["images"]) == 2
    assert metrics["coco_eval_bbox"]["stats"] == pytest.approx([float(v) for v in ev.stats], abs=1e-12)
    predicted = _run(["predict", root, "--resume", checkpoint, "--threshold", "0", "--output-dir", tmp_path / "pred"])
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == ["v1.png", "v2.png"]
    assert "2 image(s)" in predicted.output


def test_init_with_a_class_map_keeps_the_mapped_class_rows(tmp_path):
    source = coco91_checkpoint(tmp_path / "coco91.pth", seed=3)
    state = torch.load(source, weights_only=True)["model"]
    voc = write_voc(tmp_path)
    config = resolve_train_config({"voc_root": str(voc), "init": str(source), "class_map": "coco-voc", "nheads": 4,
                                   "output_dir": str(tmp_path / "out")})
    assert config.model.num_classes == 0  # from the data, not the checkpoint's 91
    config = config.replace(model=config.model.replace(num_classes=20))
    torch.manual_seed(0)
    head = build_run_model(config, torch.device("cpu"), list(VOC_CLASSES)).state_dict()
    for voc_id, name in enumerate(VOC_CLASSES):
        coco_id = COCO_VOC[name][1]
        assert torch.equal(head["class_embed.weight"][voc_id], state["class_embed.weight"][coco_id])
        assert torch.equal(head["class_embed.bias"][voc_id], state["class_embed.bias"][coco_id])
    assert torch.equal(head["class_embed.weight"][20], state["class_embed.weight"][91])  # no-object row
    assert torch.equal(head["bbox_embed.layers.0.weight"], state["bbox_embed.layers.0.weight"])


def test_init_with_a_json_map_by_names_keeps_mapped_rows_and_trains_the_rest_anew(tmp_path):
    source = coco91_checkpoint(tmp_path / "coco91.pth", seed=4)
    state = torch.load(source, weights_only=True)["model"]
    (tmp_path / "map.json").write_text(json.dumps({"cat": "cat", "18": "dog"}))  # by name and by id
    config = resolve_train_config({"yolo_root": str(write_yolo(tmp_path / "yolo")), "init": str(source),
                                   "class_map": str(tmp_path / "map.json"), "nheads": 4, "output_dir": str(tmp_path)})
    config = config.replace(model=config.model.replace(num_classes=3))
    head = build_run_model(config, torch.device("cpu"), ["cat", "dog", "bird"]).state_dict()["class_embed.weight"]
    assert torch.equal(head[0], state["class_embed.weight"][17]) and torch.equal(head[1], state["class_embed.weight"][18])
    assert not any(torch.equal(head[2], row) for row in state["class_embed.weight"])  # bird: fresh
