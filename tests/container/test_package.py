"""The packaging command: reproducible tarballs that load, and one-line refusals of what would not."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from inference_server import package
from inference_server.artifact import load_predictor, load_user_module, read_metadata
from tests.container.artifacts import (
    CLASS_NAMES,
    DETECTRON2_MISSING,
    hide_detectron2,
    write_detectron2_training_output,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_package(*args: object) -> subprocess.CompletedProcess:
    """The CLI exactly as a user runs it, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "container")}
    return subprocess.run(
        [sys.executable, "-m", "inference_server.package", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def assert_refused(result: subprocess.CompletedProcess, message: str, output: Path) -> None:
    assert result.returncode != 0, result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr
    assert not output.exists()


@pytest.fixture(scope="module")
def torchvision_weights(torchvision_model_dir) -> Path:
    """The bare state dict the torchvision test artifact was packaged from (two classes)."""
    return torchvision_model_dir.parent / "weights.pth"


def torchvision_flags(torchvision_model_dir) -> list[str]:
    options = read_metadata(torchvision_model_dir).torchvision
    return [
        "--backend",
        "torchvision",
        "--min-size",
        options.min_size,
        "--max-size",
        options.max_size,
        "--detections-per-image",
        options.detections_per_image,
    ]


def test_packaging_the_same_inputs_twice_gives_identical_bytes(
    tmp_path, torchvision_model_dir, torchvision_weights
):
    first = torchvision_model_dir.parent / "model.tar.gz"
    metadata = read_metadata(torchvision_model_dir)

    second = package.build_artifact(
        tmp_path / "model.tar.gz",
        backend="torchvision",
        class_names=metadata.class_names,
        weights=torchvision_weights,
        torchvision_options=metadata.torchvision,
    )

    assert second.read_bytes() == first.read_bytes()
    assert second.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime
    with tarfile.open(second) as archive:
        members = archive.getmembers()
    assert [member.name for member in members] == ["metadata.json", "model_final.pth"]
    assert {(member.mtime, member.uid, member.gid, member.uname, member.mode) for member in members} == {
        (0, 0, 0, "", 0o644)
    }


def test_cli_packages_torchvision_weights_with_user_code(
    tmp_path, torchvision_model_dir, torchvision_weights
):
    code = tmp_path / "handlers.py"
    code.write_text("def output_fn(prediction, accept):\n    return b'custom'\n")
    output = tmp_path / "model.tar.gz"

    result = run_package(
        "--weights",
        torchvision_weights,
        "--class-names",
        *CLASS_NAMES,
        *torchvision_flags(torchvision_model_dir),
        "--code",
        code,
        "--output",
        output,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {output} (")
    with tarfile.open(output) as archive:
        assert archive.getnames() == ["code/inference.py", "metadata.json", "model_final.pth"]
        archive.extractall(tmp_path / "model", filter="data")
    model_dir = tmp_path / "model"
    assert read_metadata(model_dir) == read_metadata(torchvision_model_dir)
    assert load_predictor(model_dir).class_names == CLASS_NAMES
    assert load_user_module(model_dir).output_fn(None, "application/json") == b"custom"


@pytest.fixture(scope="module")
def bad_torchvision_weights(tmp_path_factory, torchvision_weights) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bad-weights")
    state = torch.load(torchvision_weights, weights_only=True)
    without_mask_head = {key: value for key, value in state.items() if not key.startswith("roi_heads.mask_")}
    torch.save(without_mask_head, directory / "no-mask-head.pth")
    (directory / "corrupt.pth").write_bytes(b"not a checkpoint" * 100)
    return {"no-mask-head": directory / "no-mask-head.pth", "corrupt": directory / "corrupt.pth"}


@pytest.mark.parametrize(
    ("weights", "class_names", "extra", "message"),
    [
        pytest.param(
            "good",
            ["balloon"],
            [],
            "shape mismatch for roi_heads.box_predictor.cls_score.weight: "
            "(3, 1024) in the file, (2, 1024) in the model and 5 more",
            id="fewer-class-names-than-the-weights",
        ),
        pytest.param(
            "no-mask-head",
            CLASS_NAMES,
            [],
            "model weights missing from the file (roi_heads.mask_head.",
            id="weights-missing-a-head",
        ),
        pytest.param(
            "corrupt", CLASS_NAMES, [], "corrupt.pth is not a PyTorch checkpoint: ", id="corrupt-weights"
        ),
        pytest.param("absent", CLASS_NAMES, [], "absent.pth does not exist", id="missing-weights"),
        pytest.param(
            "good",
            ["a", "a"],
            [],
            "error: class_names: must be unique, repeated: a",
            id="duplicate-class-names",
        ),
        pytest.param(
            "good",
            CLASS_NAMES,
            ["--min-size", "0"],
            "min_size: Input should be greater than 0",
            id="bad-option",
        ),
    ],
)
def test_cli_refuses_weights_that_do_not_load(
    tmp_path,
    torchvision_model_dir,
    torchvision_weights,
    bad_torchvision_weights,
    weights,
    class_names,
    extra,
    message,
):
    paths = {"good": torchvision_weights, "absent": tmp_path / "absent.pth", **bad_torchvision_weights}
    output = tmp_path / "model.tar.gz"
    flags = torchvision_flags(torchvision_model_dir)

    result = run_package(
        "--weights", paths[weights], "--class-names", *class_names, *flags, *extra, "--output", output
    )

    assert_refused(result, message, output)
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--backend", "detectron2", "--weights", "w.pth"],
            "--weights needs --config for the detectron2 backend",
        ),
        (["--training-dir", "out", "--min-size", "320"], "--min-size apply to the torchvision backend only"),
        (
            ["--weights", "w.pth", "--training-dir", "out"],
            "argument --training-dir: not allowed with argument --weights",
        ),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path, args, message):
    output = tmp_path / "model.tar.gz"

    result = run_package(*args, "--class-names", "balloon", "--output", output)

    assert_refused(result, message, output)
    assert result.returncode == 2


def test_cli_refuses_user_code_with_a_syntax_error(tmp_path, torchvision_model_dir, torchvision_weights):
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text("def model_fn(model_dir):\n    return (\n")
    output = tmp_path / "model.tar.gz"

    result = run_package(
        "--weights",
        torchvision_weights,
        "--class-names",
        *CLASS_NAMES,
        *torchvision_flags(torchvision_model_dir),
        "--code",
        code,
        "--output",
        output,
    )

    assert_refused(result, "inference.py line 2: '(' was never closed", output)


def test_cli_refuses_a_detectron2_model_without_detectron2(tmp_path, monkeypatch, capsys):
    hide_detectron2(monkeypatch)
    (tmp_path / "config.yaml").write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 1\n")
    (tmp_path / "model_final.pth").write_bytes(b"weights")
    output = tmp_path / "model.tar.gz"

    exit_code = package.main(
        ["--training-dir", str(tmp_path), "--class-names", "balloon", "--output", str(output)]
    )

    stderr = capsys.readouterr().err
    assert exit_code == 1
    assert stderr == (
        "error: the artifact uses the detectron2 backend but detectron2 is not installed: "
        "build it from source (see README)\n"
    )
    assert not output.exists()


@pytest.fixture(scope="module")
def detectron2_training_dir(tmp_path_factory) -> Path:
    pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
    return write_detectron2_training_output(tmp_path_factory.mktemp("detectron2-training") / "output")


def test_cli_packages_a_detectron2_training_dir_from_its_last_checkpoint(tmp_path, detectron2_training_dir):
    training_dir = tmp_path / "output"
    training_dir.mkdir()
    (training_dir / "config.yaml").write_bytes((detectron2_training_dir / "config.yaml").read_bytes())
    (training_dir / "model_0000999.pth").write_bytes(
        (detectron2_training_dir / "model_final.pth").read_bytes()
    )
    (training_dir / "last_checkpoint").write_text("model_0000999.pth")
    output = tmp_path / "model.tar.gz"

    result = run_package("--training-dir", training_dir, "--class-names", *CLASS_NAMES, "--output", output)

    assert result.returncode == 0, result.stderr
    with tarfile.open(output) as archive:
        assert archive.getnames() == ["config.yaml", "metadata.json", "model_final.pth"]
        archive.extractall(tmp_path / "model", filter="data")
    model_dir = tmp_path / "model"
    assert "_BASE_" not in (model_dir / "config.yaml").read_text()
    assert list(torch.load(model_dir / "model_final.pth", weights_only=True)) == [
        "model"
    ]  # no optimizer state
    predictor = load_predictor(model_dir)
    assert (predictor.input_format, predictor.class_names) == ("BGR", CLASS_NAMES)


@pytest.mark.parametrize(
    ("config_edit", "class_names", "message"),
    [
        pytest.param(
            None,
            ["balloon"],
            "has MODEL.ROI_HEADS.NUM_CLASSES 2 but 1 class names were given (balloon)",
            id="class-count-disagrees-with-config",
        ),
        pytest.param(
            ("NUM_CLASSES: 2", "NUM_CLASSES: 3"),
            ["a", "b", "c"],
            "shape mismatch for roi_heads.box_predictor.cls_score.weight: "
            "(3, 1024) in the file, (4, 1024) in the model",
            id="weights-trained-for-other-classes",
        ),
        pytest.param(
            ("MODEL:\n", "MODEL:\n  NOT_A_KEY: 1\n"),
            CLASS_NAMES,
            "is not a detectron2 config this detectron2 can load: "
            "KeyError: 'Non-existent config key: MODEL.NOT_A_KEY'",
            id="unknown-config-key",
        ),
        pytest.param(
            ("FORMAT: BGR", "FORMAT: YUV-BT.601"),
            CLASS_NAMES,
            "INPUT.FORMAT must be BGR or RGB, not 'YUV-BT.601'",
            id="unsupported-input-format",
        ),
    ],
)
def test_cli_refuses_a_detectron2_config_that_does_not_fit(
    tmp_path, detectron2_training_dir, config_edit, class_names, message
):
    config = (detectron2_training_dir / "config.yaml").read_text()
    if config_edit is not None:
        assert config_edit[0] in config
        config = config.replace(config_edit[0], config_edit[1], 1)
    (tmp_path / "config.yaml").write_text(config)
    output = tmp_path / "model.tar.gz"

    result = run_package(
        "--config",
        tmp_path / "config.yaml",
        "--weights",
        detectron2_training_dir / "model_final.pth",
        "--class-names",
        *class_names,
        "--output",
        output,
    )

    assert_refused(result, message, output)
