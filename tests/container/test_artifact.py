"""metadata.json validation, load_predictor's refusals and the optional user module."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from inference_server.artifact import load_predictor, load_user_module, read_metadata
from inference_server.artifact_format import ArtifactError, TorchvisionOptions
from tests.container.artifacts import hide_detectron2


def write_metadata(model_dir: Path, **fields) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "metadata.json").write_text(json.dumps(fields))
    return model_dir


def test_torchvision_metadata_gets_default_options_when_the_block_is_omitted(tmp_path):
    write_metadata(tmp_path, format_version=1, backend="torchvision", class_names=["balloon"])

    metadata = read_metadata(tmp_path)

    assert metadata.torchvision == TorchvisionOptions()
    assert (metadata.torchvision.min_size, metadata.torchvision.max_size) == (800, 1333)
    assert metadata.num_classes == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"backend": "onnx", "class_names": ["a"]},
            r"backend: Input should be 'detectron2' or 'torchvision'",
        ),
        ({"backend": "detectron2", "class_names": []}, r"class_names: .*at least 1 item"),
        ({"backend": "detectron2", "class_names": ["a", "a"]}, r"class_names: must be unique, repeated: a"),
        ({"backend": "detectron2", "class_names": [""]}, r"class_names\.0: .*at least 1 character"),
        (
            {"backend": "detectron2", "class_names": ["a"], "format_version": 2},
            r"format_version: Input should be 1",
        ),
        (
            {"backend": "detectron2", "class_names": ["a"], "labels": ["a"]},
            r"labels: Extra inputs are not permitted",
        ),
        (
            {"backend": "detectron2", "class_names": ["a"], "torchvision": {"min_size": 320}},
            r"torchvision: only allowed with backend torchvision, not detectron2",
        ),
        (
            {"backend": "torchvision", "class_names": ["a"], "torchvision": {"min_size": 0}},
            r"torchvision\.min_size: Input should be greater than 0",
        ),
        (
            {"backend": "torchvision", "class_names": ["a"], "torchvision": {"architecture": "fasterrcnn"}},
            r"torchvision\.architecture: Input should be "
            r"'maskrcnn_resnet50_fpn' or 'maskrcnn_resnet50_fpn_v2'",
        ),
    ],
)
def test_invalid_metadata_is_refused_naming_the_field(tmp_path, fields, message):
    write_metadata(tmp_path, **fields)

    with pytest.raises(ArtifactError, match=message) as raised:
        read_metadata(tmp_path)

    assert "\n" not in str(raised.value)
    assert str(tmp_path / "metadata.json") in str(raised.value)


def test_a_directory_without_metadata_is_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match=r"metadata\.json is missing: is this a model\.tar\.gz built by"):
        load_predictor(tmp_path)


def test_an_artifact_without_its_weights_is_refused(tmp_path):
    write_metadata(tmp_path, backend="torchvision", class_names=["balloon"])

    with pytest.raises(ArtifactError, match=r"model_final\.pth is missing from the model artifact"):
        load_predictor(tmp_path)


def test_a_detectron2_artifact_without_detectron2_says_how_to_get_it(tmp_path, monkeypatch):
    hide_detectron2(monkeypatch)
    write_metadata(tmp_path, backend="detectron2", class_names=["balloon"])

    with pytest.raises(
        ArtifactError, match=r"uses the detectron2 backend but detectron2 is not installed: build it"
    ):
        load_predictor(tmp_path)


def test_an_artifact_without_code_has_no_user_module(tmp_path):
    assert load_user_module(tmp_path) is None


def test_the_user_module_is_imported_with_its_directory_on_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "inference", raising=False)
    monkeypatch.delitem(sys.modules, "user_helpers", raising=False)
    code = tmp_path / "code"
    code.mkdir()
    (code / "user_helpers.py").write_text("SCALE = 2\n")
    (code / "inference.py").write_text(
        "import user_helpers\n\ndef predict_fn(data, model):\n    return data * user_helpers.SCALE\n"
    )

    module = load_user_module(tmp_path)

    assert module.predict_fn(21, model=None) == 42
    assert not hasattr(module, "model_fn")
