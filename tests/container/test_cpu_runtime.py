"""CPU_RUNTIME=openvino: the real server answers over HTTP within the documented tolerance of eager
(docs/cpu-runtime.md), converts once (at packaging or at the first start, then from its cache),
and refuses a conversion that does not come from the artifact's weights, or a precision the CPU
lacks, with one line."""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from .agreement import compare
from .artifacts import TEST_IMAGES

pytest.importorskip("openvino", reason="openvino is not installed (requirements-dev.txt installs it)")

from inference_server import artifact, cpu_runtime  # noqa: E402
from inference_server.artifact_format import ArtifactError  # noqa: E402
from inference_server.settings import CpuPrecision  # noqa: E402

pytestmark = pytest.mark.needs_torch
PHOTO = next(path for path in TEST_IMAGES if path.name == "input.jpg")
# docs/cpu-runtime.md: at fp32 every instance is found again (same class, box IoU >= 0.9) with boxes
# within 0.5 px, scores within 1e-3 and masks of IoU >= 0.98.
FP32_MAX_BOX_PX = 0.5
FP32_MAX_SCORE = 1e-3
FP32_MIN_MASK_IOU = 0.98


@dataclass(frozen=True)
class ServedDetections:
    """A served JSON document as the arrays agreement.compare reads."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: list[np.ndarray]

    @classmethod
    def of(cls, document: dict) -> ServedDetections:
        instances = document["instances"]
        return cls(
            boxes=np.array([instance["box"] for instance in instances], dtype=np.float32).reshape(-1, 4),
            scores=np.array([instance["score"] for instance in instances], dtype=np.float32),
            classes=np.array([instance["class_id"] for instance in instances], dtype=np.int64),
            masks=[
                mask_util.decode(
                    {"size": instance["mask"]["size"], "counts": instance["mask"]["counts"].encode()}
                ).astype(bool)
                for instance in instances
            ],
        )

    def __len__(self) -> int:
        return len(self.scores)


def assert_within_fp32_tolerance(reference, candidate) -> None:
    agreement = compare(reference, candidate)
    assert len(reference) > 0
    assert agreement.all_matched, agreement
    assert agreement.max_box_px <= FP32_MAX_BOX_PX, agreement
    assert agreement.max_score <= FP32_MAX_SCORE, agreement
    assert agreement.min_mask_iou >= FP32_MIN_MASK_IOU, agreement


def served(server, photo: Path = PHOTO) -> ServedDetections:
    response = server.invoke(photo.read_bytes(), "image/jpeg")
    assert response.status_code == 200, response.text
    return ServedDetections.of(response.json())


@pytest.fixture(scope="module")
def packaged_model_dir(torchvision_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The torchvision test artifact with its conversion stored inside, as package writes it."""
    destination = tmp_path_factory.mktemp("packaged") / "model"
    shutil.copytree(torchvision_model_dir, destination)
    cpu_runtime.package(artifact.load_predictor(destination), destination)
    return destination


def test_openvino_fp32_serves_what_eager_serves_within_tolerance(
    realtime_server, start_server, torchvision_model_dir, tmp_path
):
    cache = tmp_path / "cache"
    server = start_server(
        torchvision_model_dir, {"CPU_RUNTIME": "openvino", "CPU_RUNTIME_CACHE_DIR": str(cache)}
    )
    eager = served(realtime_server)
    assert_within_fp32_tolerance(eager, served(server))
    # Converted once, at start: one conversion in the cache, and none logged by the requests.
    assert len([entry for entry in cache.iterdir() if not entry.name.startswith(".")]) == 1
    assert server.log().count("converted backbone") == 1
    served(server)
    assert server.log().count("converted backbone") == 1
    assert "cpu runtime openvino fp32" in server.log()


def test_a_second_start_reads_the_cache_instead_of_converting(start_server, torchvision_model_dir, tmp_path):
    env = {"CPU_RUNTIME": "openvino", "CPU_RUNTIME_CACHE_DIR": str(tmp_path / "cache")}
    first = start_server(torchvision_model_dir, env)
    first.stop()
    second = start_server(torchvision_model_dir, env)
    assert "converted" in first.log()
    assert "converted" not in second.log()
    assert served(second).scores.size > 0


def test_a_packaged_conversion_serves_without_converting(
    realtime_server, start_server, packaged_model_dir, tmp_path
):
    cache = tmp_path / "cache"
    server = start_server(
        packaged_model_dir, {"CPU_RUNTIME": "openvino", "CPU_RUNTIME_CACHE_DIR": str(cache)}
    )
    assert_within_fp32_tolerance(served(realtime_server), served(server))
    assert "converted" not in server.log()
    assert not cache.exists()


def test_a_conversion_from_other_weights_is_refused_at_load_with_one_line(
    start_server, packaged_model_dir, tmp_path
):
    tampered = tmp_path / "model"
    shutil.copytree(packaged_model_dir, tampered)
    manifest_path = tampered / cpu_runtime.RUNTIME_DIR / cpu_runtime.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["weights_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    server = start_server(tampered, {"CPU_RUNTIME": "openvino"}, wait_ready=False)
    assert server.process.wait(timeout=600) != 0
    errors = [record["message"] for record in server.records() if record.get("level") == "ERROR"]
    assert len(errors) == 1, errors
    assert "was converted from other weights (sha256 000000000000…)" in errors[0]
    assert "repackage with --cpu-runtime openvino" in errors[0]


def test_eager_is_the_default_and_needs_no_conversion(realtime_server):
    assert "cpu runtime eager" in realtime_server.log()
    assert "converted" not in realtime_server.log()


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    import openvino

    class FP32OnlyCore:
        def get_property(self, device: str, name: str):
            assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return ["FP32", "INT8"]

    monkeypatch.setattr(openvino, "Core", FP32OnlyCore)
    with pytest.raises(
        cpu_runtime.RuntimeUnavailable, match=r"^CPU_PRECISION=bf16: this CPU has no bfloat16"
    ):
        cpu_runtime.check_precision(CpuPrecision.BF16)
    cpu_runtime.check_precision(CpuPrecision.FP32)  # fp32 needs nothing of the CPU


def test_a_custom_model_without_networks_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="which names none \\(a custom model_fn\\): unset CPU_RUNTIME"):
        cpu_runtime.apply(object(), tmp_path, CpuPrecision.FP32, tmp_path)


def test_package_cli_stores_the_conversion(torchvision_model_dir, tmp_path):
    from inference_server import package

    output = tmp_path / "model.tar.gz"
    argv = ["--backend", "torchvision", "--weights", str(torchvision_model_dir / "model_final.pth")]
    argv += ["--class-names", *artifact.read_metadata(torchvision_model_dir).class_names]
    argv += ["--min-size", "320", "--max-size", "512", "--detections-per-image", "10"]
    assert package.main([*argv, "--output", str(output), "--cpu-runtime", "openvino"]) == 0
    with tarfile.open(output) as archive:
        names = set(archive.getnames())
    assert {"openvino/manifest.json", "openvino/backbone.xml", "openvino/mask_head.bin"} <= names


def test_detectron2_openvino_fp32_serves_what_eager_serves_within_tolerance(
    start_server, detectron2_model_dir, tmp_path
):
    eager = start_server(detectron2_model_dir)
    converted = start_server(
        detectron2_model_dir, {"CPU_RUNTIME": "openvino", "CPU_RUNTIME_CACHE_DIR": str(tmp_path / "cache")}
    )
    for photo in TEST_IMAGES:
        assert_within_fp32_tolerance(served(eager, photo), served(converted, photo))
