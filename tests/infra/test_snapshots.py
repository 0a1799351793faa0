"""Template snapshots (review infra changes as a diff) and synthesis determinism."""

import shutil

import aws_cdk as cdk
import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from sagemaker_constructs.images import InferenceImages
from tests.synthesis import REPO_ROOT, redact_image_hashes, synthesize

STACK_KEYS = ["shared", "realtime", "async", "serverless", "batch"]


@pytest.fixture
def json_snapshot(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("key", STACK_KEYS)
def test_template_snapshot(synth, key, json_snapshot):
    assert redact_image_hashes(synth, synth.template(key)) == json_snapshot


def test_two_synths_give_identical_templates_and_asset_manifests(synth, tmp_path):
    again = synthesize(tmp_path / "cdk.out")

    for pattern in ("*.template.json", "*.assets.json"):
        first = {path.name: path.read_text() for path in synth.outdir.glob(pattern)}
        second = {path.name: path.read_text() for path in again.outdir.glob(pattern)}
        assert first == second, pattern
    assert again.stacks.shared.images.gpu.asset_hash == synth.stacks.shared.images.gpu.asset_hash


def image_hashes(directory) -> tuple[str, str]:
    stack = cdk.Stack(cdk.App(), "Images")
    images = InferenceImages(stack, "Images", directory=directory)
    return images.gpu.asset_hash, images.cpu.asset_hash


def test_caches_and_test_output_never_change_the_image_assets(tmp_path):
    container = tmp_path / "container"
    shutil.copytree(REPO_ROOT / "container", container, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    clean = image_hashes(container)
    for stray in [
        "inference_server/__pycache__/server.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "x.egg-info/PKG-INFO",
    ]:
        (container / stray).parent.mkdir(parents=True, exist_ok=True)
        (container / stray).write_text("stray")

    assert image_hashes(container) == clean

    (container / "inference_server" / "new_module.py").write_text("VALUE = 1\n")
    changed = image_hashes(container)
    assert changed[0] != clean[0] and changed[1] != clean[1]
    assert clean[0] != clean[1], "the gpu and cpu targets are distinct assets"
