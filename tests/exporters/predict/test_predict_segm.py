"""``detrtool predict`` with a segmentation model: instance masks (pictures, RLE in detections.json), the
panoptic PNG / JSON / picture, and padded batches giving each image the masks it gets alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from cli.main import cli
from detr_core.checkpoint import model_payload, save_checkpoint
from detr_core.config import ModelConfig
from detr_core.registry import build_model
from detr_core.segmentation import panoptic_predictions, segm_masks
from detr_core.segmentation.panoptic_format import decode_png, segment_bbox
from exporters.image_inputs import read_image
from exporters.predict.model import PredictModel, open_checkpoint
from exporters.predict.run import (
    InputSpec,
    Predictor,
    instance_masks,
    mask_logits,
    prepare_inputs,
    valid_sizes,
)

NAMES = ("circle", "square", "triangle", "sky")
STUFF = (3,)
SIZES = {"wide.png": (96, 128), "tall.png": (144, 96)}  # fixed points of the 96 / 160 eval rule, multiples of 4


def _invoke(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)], catch_exceptions=False)


def _write_images(folder: Path) -> list[Path]:
    """Two images of different sizes: a colour gradient with three rectangles (compact segments)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (name, (h, w)) in enumerate(SIZES.items()):
        y, x = np.mgrid[0:h, 0:w]
        image = np.stack([x * 255 // w, y * 255 // h, np.full((h, w), 60 + 40 * k)], -1).astype(np.uint8)
        for j, color in enumerate(((250, 20, 20), (20, 250, 20), (20, 20, 250))):
            image[10 + 25 * j : 40 + 25 * j, 8 + 20 * j + 10 * k : 50 + 20 * j + 10 * k] = color
        PIL.Image.fromarray(image).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return _write_images(tmp_path_factory.mktemp("segm-images"))


@pytest.fixture(scope="module")
def segm_checkpoint(tmp_path_factory) -> Path:
    """A random small segmentation model (class 3 is stuff) evaluated at the shapes rule 96 / 160."""
    torch.manual_seed(0)
    config = ModelConfig(backbone="small_cnn", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, num_queries=5, num_classes=4, masks=True, class_names=NAMES,
                         stuff_classes=STUFF)
    model = build_model(config)
    payload = model_payload(model, config)
    payload["config"]["run"] = {"transforms": "shapes", "image_size": 96}
    path = tmp_path_factory.mktemp("segm-model") / "segm.pth"
    save_checkpoint(path, payload)
    return path


@pytest.fixture(scope="module")
def predicted(segm_checkpoint, images, tmp_path_factory):
    """predict's output folder (batch of two, every query kept) and the result."""
    out = tmp_path_factory.mktemp("segm-out")
    result = _invoke(*images, "--resume", segm_checkpoint, "--threshold", 0, "--batch-size", 2, "--save-json",
                     "--panoptic", "--panoptic-threshold", 0, "--output-dir", out)
    return out, result


def _pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def test_masks_are_drawn_and_saved_as_coco_segm_results(predicted, segm_checkpoint, images):
    out, result = predicted
    assert result.exit_code == 0, result.output
    model = open_checkpoint(segm_checkpoint)
    expected = Predictor(model.runtime, model.spec, threshold=0.0, batch_size=2).predict_images(
        [read_image(p) for p in images])
    detections = json.loads((out / "detections.json").read_text())
    coco = COCO()
    shown = {d["image_id"]: SIZES[Path(d["file_name"]).name] for d in detections}
    coco.dataset = {"images": [{"id": i, "height": h, "width": w} for i, (h, w) in shown.items()], "annotations": [],
                    "categories": [{"id": c, "name": n} for c, n in enumerate(NAMES)]}
    coco.createIndex()
    loaded = coco.loadRes(detections)  # the file as COCO segm results
    for path, found in zip(images, expected, strict=True):
        mine = [d for d in detections if d["file_name"] == str(path)]
        assert len(mine) == len(found) == 5 and found.masks.shape == (5, *SIZES[path.name])
        decoded = np.stack([mask_util.decode(d["segmentation"]) for d in mine]).astype(bool)
        assert np.array_equal(decoded, found.masks.numpy())
        ann = loaded.loadAnns(loaded.getAnnIds(imgIds=[mine[0]["image_id"]]))[0]
        assert np.array_equal(loaded.annToMask(ann).astype(bool), found.masks[0].numpy())
        _check_picture(path, out / path.name, found.masks.numpy(), found.boxes)


def _check_picture(source: Path, picture: Path, masks: np.ndarray, boxes: torch.Tensor) -> None:
    """Every masked pixel away from box lines and labels is tinted; unmasked pixels there are not."""
    before, after = _pixels(source), _pixels(picture)
    assert after.shape == before.shape
    far = np.ones(masks.shape[1:], dtype=bool)
    for x0, y0, x1, y1 in boxes.round().int().tolist():
        far[max(y0 - 16, 0) : y0 + 16, max(x0 - 3, 0) :] = False  # top line and its label (wider than a narrow box)
        for ys, xs in ((slice(y1 - 3, y1 + 4), slice(x0 - 3, x1 + 4)), (slice(y0 - 3, y1 + 4), slice(x0 - 3, x0 + 4)),
                       (slice(y0 - 3, y1 + 4), slice(x1 - 3, x1 + 4))):
            far[slice(max(ys.start, 0), ys.stop), slice(max(xs.start, 0), xs.stop)] = False
    changed = np.abs(after - before).max(-1) > 0
    masked = masks.any(0)
    assert (far & masked).sum() > 100 and changed[far & masked].mean() > 0.99
    assert (far & ~masked).sum() > 100 and not changed[far & ~masked].any()


def test_panoptic_png_json_and_picture(predicted, images):
    out, result = predicted
    assert result.exit_code == 0, result.output
    panoptic = json.loads((out / "panoptic.json").read_text())
    detections = json.loads((out / "detections.json").read_text())
    assert [c["isthing"] for c in panoptic["categories"]] == [int(c not in STUFF) for c in range(len(NAMES))]
    assert len(panoptic["annotations"]) == len(images)
    for path, ann in zip(images, panoptic["annotations"], strict=True):
        ids = decode_png(out / "panoptic" / ann["file_name"])
        assert ids.shape == SIZES[path.name]
        assert ann["image_id"] == next(d["image_id"] for d in detections if d["file_name"] == str(path))
        infos = ann["segments_info"]
        assert infos and sorted(np.unique(ids).tolist()) == sorted(i["id"] for i in infos)
        for info in infos:
            assert info["area"] == int((ids == info["id"]).sum()) > 4
            assert info["bbox"] == segment_bbox(ids, info["id"])
            assert info["isthing"] == (info["category_id"] not in STUFF)
        picture = _pixels(out / f"{path.stem}_panoptic.png")
        h, w = SIZES[path.name]
        assert picture.shape[0] > h and picture.shape[1] >= w  # the legend below the map


def test_instance_masks_equal_postprocess_segm(segm_expected):
    """On the reference's padded batch: PostProcessSegm's masks exactly, from logits and from mask_probs."""
    outputs, orig, fed = segm_expected["outputs"], segm_expected["orig_sizes"], segm_expected["max_sizes"]
    canvas = tuple(segm_expected["padded"].shape[-2:])
    expected = segm_masks(outputs["pred_masks"], orig, fed)
    for key, value in (("pred_masks", outputs["pred_masks"]), ("mask_probs", outputs["pred_masks"].sigmoid())):
        logits = mask_logits({key: value})
        for b in range(len(orig)):
            masks = instance_masks(logits[b], tuple(fed[b].tolist()), canvas, tuple(orig[b].tolist()))
            assert torch.equal(masks, expected[b][:, 0].bool()), key
            assert torch.equal(masks[:, None].to(torch.uint8), segm_expected["postprocess_segm"][b]["masks"])


class PaddingFreeRuntime:
    """A segmentation runtime whose outputs on an image's own region do not depend on padding (a real
    DETRsegm's do: GroupNorm statistics and convolutions see the padding): query q's mask logits are a
    fixed mix of the pixels' colour, averaged over each 4x4 cell; queries 0-2 are confident classes 0-2
    (2 stuff), query 3 is "no object"."""

    stride = 4
    mix = torch.tensor([[8.0, -6.0, -6.0], [-6.0, 8.0, -6.0], [-4.0, -4.0, 6.0], [1.0, 1.0, 1.0]])
    logits = torch.tensor([[9.0, 0, 0, 0], [0, 9.0, 0, 0], [0, 0, 9.0, 0], [0, 0, 0, 9.0]])

    def __call__(self, images, mask, orig_sizes):
        cells = F.avg_pool2d(images, self.stride)
        masks = torch.einsum("qc,bchw->bqhw", self.mix, cells)
        batch = images.shape[0]
        return {"pred_logits": self.logits.expand(batch, -1, -1), "pred_boxes": torch.full((batch, 4, 4), 0.5),
                "pred_masks": masks}


@pytest.fixture
def crafted(monkeypatch):
    model = PredictModel(PaddingFreeRuntime(), InputSpec(None, 96, 160), ("red", "green", "blue"), "crafted",
                         masks=True, is_thing={0: True, 1: True, 2: False})
    monkeypatch.setattr("exporters.predict.model.open_checkpoint", lambda *args, **kwargs: model)
    return model


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_a_padded_batch_gives_each_image_its_own_masks(crafted, images, tmp_path):
    runs = {}
    for batch in (1, 2):
        out = tmp_path / f"batch{batch}"
        result = _invoke(*images, "--resume", images[0], "--batch-size", batch, "--threshold", 0.5, "--save-json",
                         "--panoptic", "--output-dir", out)
        assert result.exit_code == 0, result.output
        runs[batch] = out
    alone, padded = (json.loads((runs[b] / "panoptic.json").read_text())["annotations"] for b in (1, 2))
    for one, two in zip(alone, padded, strict=True):
        ids1, ids2 = (decode_png(runs[b] / "panoptic" / one["file_name"]) for b in (1, 2))
        assert [i["id"] for i in one["segments_info"]] == [i["id"] for i in two["segments_info"]] == [1, 2, 3]
        for segment in (1, 2, 3):
            assert _iou(ids1 == segment, ids2 == segment) >= 0.99
    masks = {b: json.loads((runs[b] / "detections.json").read_text()) for b in (1, 2)}
    assert len(masks[1]) == len(masks[2]) == 6
    for d1, d2 in zip(masks[1], masks[2], strict=True):
        assert _iou(mask_util.decode(d1["segmentation"]) > 0, mask_util.decode(d2["segmentation"]) > 0) >= 0.99


def test_the_reference_panoptic_path_stretches_padded_images(images):
    """Without the crop (input_sizes None), the shorter image's map in a padded batch is squeezed: the crop
    path is what the batch test above relies on."""
    runtime = PaddingFreeRuntime()
    predictor = Predictor(runtime, InputSpec(None, 96, 160))
    pixels = [read_image(p).pixels for p in images]
    batch, mask, orig = prepare_inputs(pixels, predictor.spec)
    single, single_mask, single_orig = prepare_inputs(pixels[:1], predictor.spec)
    sizes, canvas = valid_sizes(mask), torch.tensor([mask.shape[-2:]] * 2)
    kwargs = {"is_thing": {0: True, 1: True, 2: False}, "threshold": 0.85}
    alone = panoptic_predictions(runtime(single, single_mask, single_orig), valid_sizes(single_mask), single_orig,
                                 **kwargs)[0]["segment_ids"]
    stretched = panoptic_predictions(runtime(batch, mask, orig), sizes, orig, **kwargs)[0]["segment_ids"]
    cropped = panoptic_predictions(runtime(batch, mask, orig), sizes, orig, input_sizes=canvas, **kwargs)
    assert min(_iou((cropped[0]["segment_ids"] == s).numpy(), (alone == s).numpy()) for s in range(3)) >= 0.99
    assert min(_iou((stretched == s).numpy(), (alone == s).numpy()) for s in range(3)) < 0.9


def test_a_class_map_keeps_each_mask_with_its_detection(crafted, images, tmp_path):
    """``--class-map`` drops "green"; the masks left are those of the same detections without the map."""
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"red": 10, "blue": 12}))
    found = {}
    for name, extra in (("plain", []), ("mapped", ["--class-map", mapping])):
        result = _invoke(*images, "--resume", images[0], "--batch-size", 2, "--save-json", "--output-dir",
                         tmp_path / name, *extra)
        assert result.exit_code == 0, result.output
        found[name] = json.loads((tmp_path / name / "detections.json").read_text())
    plain = {(d["image_id"], d["category_id"]): d["segmentation"] for d in found["plain"]}
    assert sorted((d["image_id"], d["category_id"]) for d in found["mapped"]) == [(1, 10), (1, 12), (2, 10), (2, 12)]
    for d in found["mapped"]:
        assert d["segmentation"] == plain[(d["image_id"], {10: 0, 12: 2}[d["category_id"]])]
    assert len({d["segmentation"]["counts"] for d in found["mapped"]}) == 4  # four different masks


def test_open_checkpoint_reads_the_file_once(segm_checkpoint, monkeypatch):
    """The model and the resize rule come from one read (an HF folder's reader logs its assumptions once)."""
    import detr_core.checkpoint
    import exporters.predict.model as predict_model

    reads = []
    real = detr_core.checkpoint.read_checkpoint
    for module in (detr_core.checkpoint, predict_model):
        monkeypatch.setattr(module, "read_checkpoint", lambda path: reads.append(path) or real(path))
    model = open_checkpoint(segm_checkpoint)
    assert reads == [segm_checkpoint] and model.masks
