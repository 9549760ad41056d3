"""Metadata round-trips through every format's artifact, and reads back without loading the model."""

from __future__ import annotations

import onnx
import pytest

from exporters import ArtifactMetadata, export, read_metadata
from exporters.metadata import MetadataError


@pytest.mark.parametrize("variant", ["onnx-dynamo", "onnx-legacy", "torchscript", "torch-export"])
def test_metadata_round_trip(artifacts, variant):
    result = artifacts(variant, 2)
    meta = read_metadata(result.path)
    assert meta == result.metadata
    assert meta.input_size == (128, 160) and meta.batch_size == 2 and (meta.size, meta.max_size) == (128, 160)
    assert meta.input_names == ("images", "mask") and meta.output_names == ("pred_logits", "pred_boxes")
    assert meta.num_queries == 12 and meta.num_classes == 7 and meta.class_names == ()
    assert meta.mean == (0.485, 0.456, 0.406) and "True on padding" in meta.mask_convention
    assert meta.torch_version and meta.detrtool_version and meta.model_config["nheads"] == 4


def test_onnx_props_and_class_names(trained_model, tmp_path):
    path = tmp_path / "named.onnx"
    result = export(trained_model, "onnx", path, input_size=(64, 96), exporter="legacy", opset=17,
                    validate=False, extra_metadata={"checkpoint_sha256": "abc"})
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    for key in ("class_names", "input_size", "mean", "std", "num_queries", "mask_convention", "resize_rule",
                "detrtool_version", "torch_version"):
        assert f"detrtool.{key}" in props
    meta = read_metadata(path)
    assert meta == result.metadata
    assert meta.class_names[:2] == ("circle", "square") and meta.extra == {"checkpoint_sha256": "abc"}
    assert meta.format_options == {"exporter": "legacy", "opset": 17}


def test_torchscript_class_names(trained_model, tmp_path):
    path = tmp_path / "named.ts"
    export(trained_model, "torchscript", path, input_size=(64, 96), validate=False)
    assert read_metadata(path).class_names[-1] == "hexagon"


def test_metadata_errors(tmp_path):
    with pytest.raises(MetadataError, match="no detrtool metadata"):
        ArtifactMetadata.from_props({"other": "1"})
    with pytest.raises(MetadataError, match="lacks"):
        ArtifactMetadata.from_dict({"format": "onnx"})
    with pytest.raises(MetadataError, match="no such artifact"):
        read_metadata(tmp_path / "missing.onnx")
