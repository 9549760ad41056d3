"""Red-team rows for the segmentation inputs (the bad-input matrix): COCO panoptic files that a reader once took
silently (``"category_id": true`` read as 1, ``isthing: "no"`` / ``null`` flipping a class between thing and
stuff, a JPEG renamed ``.png`` whose lossy pixels turned ids into "no pixel" noise, a 16-bit RGB PNG of which
PIL keeps the high bytes) or crashed on (a segment id of 2**70, an area of 2**2000, a category id of 10**9
allocating a class list of that length), each now one line naming the file and the entry, through ``data
check --panoptic`` and the loader of ``eval``/``train``.

Hugging Face ``DetrForSegmentation`` folders: a config.json size that is not an integer (an ``int()``
message naming no file), one of 10**9 (a 512 GB allocation for ``num_queries``, a 10**9-entry label dict
for ``num_labels``) or one disagreeing with the weights (a model of 4096 encoder layers was built before the
weights were compared); ``id2label`` keys ``"0"`` and ``"00"`` (one name lost silently); a shard index
naming ``../x.safetensors`` (weights read from outside the folder, exit 0) or a missing shard. And ``predict --panoptic``
where its ``panoptic/`` folder is a file."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PIL.Image
import pytest
from safetensors.torch import load_file, save_file

from detr_core.segmentation.panoptic_format import id_to_rgb
from tests.cli.bad_input import check_bad_input
from tests.conftest import reference_path
from tests.data import write_coco
from tests.data.test_check_panoptic import ID_A, PanopticFiles, good_ids, write_panoptic


def _segment(**fields: Any) -> Callable[[PanopticFiles], None]:
    return lambda f: f.edit(lambda d: d["annotations"][0]["segments_info"][0].update(fields))


def _category(**fields: Any) -> Callable[[PanopticFiles], None]:
    return lambda f: f.edit(lambda d: d["categories"][0].update(fields))


def _jpeg(f: PanopticFiles) -> None:
    with PIL.Image.open(f.png(1)) as img:
        img.load()
    img.save(f.png(1), format="JPEG", quality=100)


def _png_16_bit(f: PanopticFiles) -> None:
    """The PNG's ids as 16-bit samples (value = 8-bit sample): PIL decodes it as ``RGB`` keeping the high bytes."""
    samples = id_to_rgb(good_ids()).astype(">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in samples)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", samples.shape[1], samples.shape[0], 16, 2, 0, 0, 0)
    f.png(1).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                         + chunk(b"IEND", b""))


def _category_id_huge(f: PanopticFiles) -> None:
    def change(data: dict[str, Any]) -> None:
        data["categories"][0]["id"] = 10**9
        for seg in data["annotations"][0]["segments_info"]:
            seg["category_id"] = 10**9 if seg["category_id"] == 1 else seg["category_id"]
    f.edit(change)


#: (plant, names the error line holds besides the file); the file named is the JSON unless it says "png"
CASES: dict[str, tuple[Callable[[PanopticFiles], None], list[str]]] = {
    "category-id-true": (_segment(category_id=True), [f"segment {ID_A}: 'category_id' is True, not an integer"]),
    "segment-id-float": (_segment(id=float(ID_A)), [f"'id' is {float(ID_A)}, not an integer"]),
    "segment-id-negative": (_segment(id=-5), ["segment id -5 is negative"]),
    "segment-id-over-256-cubed": (_segment(id=2**70), [f"segment id {2**70} is over 16777215 (256³ - 1)"]),
    "area-beyond-float": (_segment(area=2**2000), [f"segment {ID_A}: 'area' is 1148130695", "not a number"]),
    "isthing-no": (_category(isthing="no"), ["category 1 ('cat'): 'isthing' is 'no', not 0 or 1"]),
    "isthing-null": (_category(isthing=None), ["category 1 ('cat'): 'isthing' is None, not 0 or 1"]),
    "category-id-huge": (_category_id_huge, ["category id 1000000000 is outside 0..65535"]),
    "png-is-a-jpeg": (_jpeg, ["png", "panoptic PNG is a JPEG file, not a PNG"]),
    "png-16-bit-rgb": (_png_16_bit, ["png", "panoptic PNG has 16 bits per channel, expected 8"]),
}


def _named(files: PanopticFiles, names: list[str]) -> list[str]:
    return [str(files.png(1)), *names[1:]] if names[0] == "png" else [str(files.ann), *names]


@pytest.mark.parametrize("case", list(CASES))
def test_panoptic_check_refuses(tmp_path, case):
    files = write_panoptic(tmp_path / "pan", 1)
    plant, names = CASES[case]
    plant(files)
    check_bad_input(["data", "check", files.root, "--panoptic"], names=[*_named(files, names), "found 1 error(s)"],
                    protect=[files.root])


@pytest.mark.parametrize("case", ["category-id-true", "isthing-null", "category-id-huge", "png-is-a-jpeg"])
def test_panoptic_eval_refuses(tmp_path, case):
    """The loader of eval (and train: the same CocoPanoptic) refuses what the check calls an error."""
    files = write_panoptic(tmp_path / "pan", 1)
    plant, names = CASES[case]
    plant(files)
    out = tmp_path / "out"
    check_bad_input(["eval", "--resume", reference_path("segm_tiny_checkpoint.pth"), "--coco-panoptic-path",
                     files.root, "--output-dir", out, "--masks", "--batch-size", "1", "--no-progress"],
                    names=_named(files, names), protect=[files.root, out])


# --- Hugging Face DetrForSegmentation folders -------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_segm(tmp_path_factory) -> Path:
    """A saved random DetrForSegmentation (timm ResNet-18, d_model 128, 5 queries, 3 classes)."""
    pytest.importorskip("transformers")
    from tests.hf.models import hf_segmentation, save_hf, segmentation_config
    return save_hf(hf_segmentation(segmentation_config()), tmp_path_factory.mktemp("hf") / "segm")


def _config(**changes: Any) -> Callable[[Path], None]:
    """Edit config.json (a ``None`` value removes the entry)."""
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return edit


def shard_mask_head(folder: Path, head_shard: str, *, write_head: bool = True) -> None:
    """Split ``model.safetensors`` into ``a.safetensors`` and ``head_shard`` (the mask head's tensors, a path
    relative to ``folder``; left unwritten unless ``write_head``) with a ``model.safetensors.index.json``."""
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    head = {k: v for k, v in state.items() if k.startswith("mask_head.")}
    save_file({k: v for k, v in state.items() if k not in head}, folder / "a.safetensors", metadata={"format": "pt"})
    if write_head:
        save_file(head, folder / head_shard, metadata={"format": "pt"})
    weight_map = {k: head_shard if k in head else "a.safetensors" for k in state}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


#: (edit of a copy of the folder, names in the error line besides the copy's path, the command)
HF_CASES: dict[str, tuple[Callable[[Path], None], list[str], str]] = {
    "layers-disagree-with-weights": (_config(encoder_layers=4096), ["config.json: enc_layers 4096 disagrees",
                                                                     "model.safetensors (encoder layers: 1)"], "convert"),
    "num-queries-huge": (_config(num_queries=10**9), ["config.json: num_queries must be an integer 1..65536",
                                                       "1000000000"], "predict"),
    "num-labels-huge": (_config(id2label=None, label2id=None, num_labels=10**9), ["config.json: num_labels",
                                                                                   "1000000000"], "convert"),
    "encoder-layers-not-an-integer": (_config(encoder_layers="six"), ["config.json: encoder_layers", "'six'"],
                                      "convert"),
    "dropout-not-a-number": (_config(dropout="x"), ["config.json: dropout must be a number 0..1, got 'x'"],
                             "convert"),
    "id2label-key-twice": (_config(id2label={"0": "a", "00": "b", "1": "c", "2": "d"}),
                           ["config.json: id2label must map class ids to names", "'00'"], "convert"),
    "shard-missing": (lambda f: shard_mask_head(f, "b.safetensors", write_head=False),
                      ["model.safetensors.index.json: shard 'b.safetensors' (holding mask_head.", "is missing"],
                      "convert"),
    "shard-outside-the-folder": (lambda f: shard_mask_head(f, "../outside.safetensors"), ["model.safetensors.index.json: shard '../outside.safetensors'",
                                                  "not a file name"], "predict"),
}


def _hf_args(command: str, folder: Path, tmp_path: Path) -> list[Any]:
    if command == "convert":
        return ["convert", folder, "--to", "official", "--output", tmp_path / "o.pth"]
    image = tmp_path / "img.png"
    PIL.Image.new("RGB", (40, 30), (120, 30, 200)).save(image)
    return ["predict", "--resume", folder, image, "--output-dir", tmp_path / "out", "--panoptic"]


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_segmentation_folder_refused(hf_segm, tmp_path, case):
    edit, names, command = HF_CASES[case]
    folder = Path(shutil.copytree(hf_segm, tmp_path / "src" / "segm"))
    edit(folder)
    check_bad_input(_hf_args(command, folder, tmp_path), names=[str(folder), *names], protect=[tmp_path / "src"])
    written = [*(tmp_path / "out").rglob("*")]  # predict makes --output-dir before it loads the model
    assert not (tmp_path / "o.pth").exists() and written == [], written


def test_predict_panoptic_folder_is_a_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "panoptic").write_text("keep me")
    image = tmp_path / "img.png"
    PIL.Image.new("RGB", (40, 30), (120, 30, 200)).save(image)
    check_bad_input(["predict", "--resume", reference_path("segm_tiny_checkpoint.pth"), image, "--output-dir", out,
                     "--panoptic"], names=[str(out / "panoptic"), "is not a folder"], protect=[out])  # nothing written


# --- the mask ground truth of eval --masks (COCO instances): what the loader's targets leave out -----------

def _instances(tmp_path: Path, crowd_segmentation: Any, *, sizes: bool = True) -> list[Any]:
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 48}]
    thing = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [2, 2, 18, 18], "area": 324, "iscrowd": 0,
             "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]]}
    crowd = {**thing, "id": 5, "iscrowd": 1, "segmentation": crowd_segmentation}
    images_dir, ann = write_coco(tmp_path, images, [thing, crowd], categories=[{"id": 1, "name": "a"}])
    if not sizes:
        data = json.loads(ann.read_text())
        data["images"][0] = {k: v for k, v in data["images"][0].items() if k not in ("height", "width")}
        ann.write_text(json.dumps(data))
    return ["eval", "--resume", reference_path("segm_tiny_checkpoint.pth"), "--val-images", images_dir, "--val-ann",
            ann, "--output-dir", tmp_path / "out", "--masks", "--batch-size", "1", "--no-progress"]


@pytest.mark.parametrize(("crowd", "names"), [
    ({"size": [40, 48], "counts": [5]}, ["crowd annotation 5", "RLE runs sum to 5", "1920"]),
    ({"size": [4000, 4800], "counts": [4000 * 4800]}, ["crowd annotation 5", "RLE size 4000x4800 does not match"]),
], ids=["crowd-rle-runs-short", "crowd-rle-other-size"])
def test_eval_masks_crowd_segmentation_refused(tmp_path, crowd, names):
    """A crowd annotation is no training target, so the loader never decoded it; COCOeval scored against it
    as it was (exit 0)."""
    args = _instances(tmp_path, crowd)
    ann = args[args.index("--val-ann") + 1]
    check_bad_input(args, names=[f"{ann}: image 1", *names], protect=[tmp_path / "out"])


def test_eval_masks_image_without_size(tmp_path):
    args = _instances(tmp_path, [[2, 2, 9, 2, 9, 9]], sizes=False)
    ann = args[args.index("--val-ann") + 1]
    check_bad_input(args, names=[str(ann), "image 1 has no positive 'height'/'width'"], protect=[tmp_path / "out"])


def test_predict_panoptic_json_is_a_folder(tmp_path):
    """A failed rename onto a folder names the file asked for, not the atomic helper's temp file."""
    out = tmp_path / "out"
    (out / "panoptic.json").mkdir(parents=True)
    (out / "panoptic.json" / "keep.txt").write_text("keep me")
    image = tmp_path / "img.png"
    PIL.Image.new("RGB", (40, 30), (120, 30, 200)).save(image)
    result = check_bad_input(["predict", "--resume", reference_path("segm_tiny_checkpoint.pth"), image,
                              "--output-dir", out, "--panoptic"], names=[str(out / "panoptic.json"), "is a folder"],
                             protect=[out])  # nothing written: refused before the pictures
    assert ".tmp" not in result.output, result.output
