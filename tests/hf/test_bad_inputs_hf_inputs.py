"""Bad-input matrix of Hugging Face folders whose reading once gave a silent wrong answer or an unclear line
(issue 23, part B): a tensor in two shards, a shard linked from outside the folder, a boolean written as a
string, a backbone entry of the wrong JSON type; and class names carrying terminal escapes. Each row: the
real CLI, one ``Error:`` line naming the file and the entry, the source folder byte-identical, nothing
written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cli.main import cli
from tests.cli.bad_input import check_bad_input
from tests.data import write_image


def _config(**changes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def _shards(folder: Path, *, twice: str | None = None, outside: Path | None = None) -> None:
    """Split ``model.safetensors`` into ``a.safetensors`` (the box head) and ``b.safetensors`` (the rest) with an
    index; ``twice``: ``b`` also holds that tensor of ``a``, with other values (the index names ``a``);
    ``outside``: ``a.safetensors`` is a symlink to a copy in the folder ``outside``."""
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    head = {k: v for k, v in state.items() if k.startswith("bbox_predictor.")}
    rest = {k: v for k, v in state.items() if k not in head}
    if twice is not None:
        rest[twice] = head[twice] + 1.0
    a_path = folder / "a.safetensors"
    if outside is not None:
        outside.mkdir(parents=True, exist_ok=True)
        save_file(head, outside / "a.safetensors", metadata={"format": "pt"})
        a_path.symlink_to(outside / "a.safetensors")
    else:
        save_file(head, a_path, metadata={"format": "pt"})
    save_file(rest, folder / "b.safetensors", metadata={"format": "pt"})
    weight_map = {k: "a.safetensors" if k in head else "b.safetensors" for k in state}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


TWICE = "bbox_predictor.layers.2.bias"

#: id -> (edit of a copy of the folder, names in the error line besides the copy's name)
CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "tensor-in-two-shards": (lambda f: _shards(f, twice=TWICE),
                             ["model.safetensors.index.json", TWICE, "'a.safetensors'", "'b.safetensors'"]),
    "shard-symlink-outside": (lambda f: _shards(f, outside=f.parent / f"{f.name}-elsewhere"),
                              ["model.safetensors.index.json", "'a.safetensors' is a symlink", "outside"]),
    "dilation-string-false": (_config(dilation="false"), ["config.json", "dilation", "JSON boolean", "'false'"]),
    "use-timm-backbone-string": (_config(use_timm_backbone="yes"), ["config.json", "use_timm_backbone", "'yes'"]),
    "resnet-depths-not-a-list": (_config(use_timm_backbone=False, backbone=None,
                                         backbone_config={"model_type": "resnet", "depths": 4}),
                                 ["config.json", "backbone_config.depths", "list of integers", "4"]),
    "id2label-name-not-a-string": (_config(id2label={"0": "a", "1": ["b"], "2": "c"}),
                                   ["config.json", "id2label['1']", "['b']"]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["convert", "predict"])
def test_hf_folder_bad_input(case, command, hf_folder, tmp_path):
    edit, names = CASES[case]
    folder = Path(shutil.copytree(hf_folder, tmp_path / f"{case}"))
    edit(folder)
    if command == "convert":
        args = ["convert", folder, "--to", "official", "--output", tmp_path / "o.pth"]
    else:
        args = ["predict", write_image(tmp_path / "imgs" / "a.png", 48, 48).parent, "--resume", folder,
                "--output-dir", tmp_path / "pred"]
    check_bad_input(args, names=[case, *names], protect=[folder])
    assert not (tmp_path / "o.pth").exists() and not list((tmp_path / "pred").rglob("*"))


def test_shard_index_naming_the_right_copies_loads(hf_folder, tmp_path):
    """The control: the same split with each tensor in the one shard the index names converts (exit 0)."""
    folder = Path(shutil.copytree(hf_folder, tmp_path / "sharded"))
    _shards(folder)
    result = CliRunner().invoke(cli, ["convert", str(folder), "--to", "official", "--output", str(tmp_path / "o.pth")])
    assert result.exit_code == 0, result.output


def test_class_names_reach_the_terminal_escaped(hf_folder, tmp_path):
    """id2label names with a terminal escape and a newline: predict's lines show them as ``\\x1b`` / ``\\n``
    (the raw bytes recoloured the terminal or forged a line)."""
    folder = Path(shutil.copytree(hf_folder, tmp_path / "escapes"))
    names = {"0": "red\x1b[31mcat", "1": "two\nlines", "2": "bell\x07"}
    _config(id2label=names, label2id={v: int(k) for k, v in names.items()})(folder)
    images = write_image(tmp_path / "imgs" / "a.png", 48, 48).parent
    result = CliRunner().invoke(cli, ["predict", str(images), "--resume", str(folder), "--threshold", "0",
                                      "--output-dir", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "two\nlines" not in result.output
    assert any(name in result.output for name in ("red\\x1b[31mcat", "two\\nlines", "bell\\x07")), result.output
