"""`d2sm register` against moto: upload, a new version copying the group's images, approval."""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from .conftest import CPU_IMAGE, GPU_IMAGE, GROUP, REGION, d2sm

REPO = Path(__file__).resolve().parents[2]


def tarball(path: Path, content: bytes = b"weights") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("model.pth")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return path


def versions() -> list[dict]:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    summaries = sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    described = [sagemaker.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]
    return sorted(described, key=lambda d: d["ModelPackageVersion"])


def test_local_tarball_uploaded_and_registered_with_both_images(deployed, tmp_path, capsys):
    model = tarball(tmp_path / "model.tar.gz")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]

    run = d2sm(capsys, "register", model, "--approve", "--wait-delay", "0.1")

    assert run.code == 0, run.err
    key = f"models/{GROUP}/{digest}/model.tar.gz"
    uploaded = boto3.client("s3", region_name=REGION).get_object(Bucket=deployed.bucket, Key=key)
    assert uploaded["Body"].read() == model.read_bytes()
    first, new = versions()
    uri = f"s3://{deployed.bucket}/{key}"
    assert new["ModelPackageVersion"] == 2
    assert new["ModelApprovalStatus"] == "Approved"
    assert new["InferenceSpecification"]["Containers"] == [{"Image": GPU_IMAGE, "ModelDataUrl": uri}]
    assert new["InferenceSpecification"]["SupportedContentTypes"] == ["image/jpeg", "image/png"]
    [cpu] = new["AdditionalInferenceSpecifications"]
    assert (cpu["Name"], cpu["Containers"]) == ("cpu", [{"Image": CPU_IMAGE, "ModelDataUrl": uri}])
    assert new["ModelPackageDescription"] == first["ModelPackageDescription"]
    assert run.out.splitlines()[0] == new["ModelPackageArn"]


def test_s3_model_used_in_place_and_left_pending(deployed, tmp_path, capsys):
    run = d2sm(
        capsys, "register", "s3://elsewhere/v7/model.tar.gz", "--description", "v7", "--wait-delay", "0.1"
    )
    assert run.code == 0, run.err
    new = versions()[-1]
    assert new["ModelApprovalStatus"] == "PendingManualApproval"
    assert new["ModelPackageDescription"] == "v7"
    assert new["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == "s3://elsewhere/v7/model.tar.gz"
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=deployed.bucket)


def test_group_without_a_version_is_refused(deployed, tmp_path, capsys):
    boto3.client("sagemaker", region_name=REGION).create_model_package_group(ModelPackageGroupName="empty")
    run = d2sm(
        capsys, "register", tarball(tmp_path / "m.tar.gz"), "--group", "empty", "--bucket", deployed.bucket
    )
    assert (run.code, run.err) == (
        1,
        "error: model package group empty has no version to take the inference images from: deploy the "
        "Shared stack first\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: give either a model.tar.gz (local or s3://) or packaging flags after --, not both\n"),
        (("missing.tar.gz",), "error: missing.tar.gz does not exist\n"),
    ],
)
def test_bad_model_arguments(deployed, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    run = d2sm(capsys, "register", *args)
    assert (run.code, run.err) == (1, message)
    assert len(versions()) == 1


def test_packaging_failure_is_the_packagers_one_line(deployed, tmp_path, capsys):
    """The container's packaging command runs as a subprocess; its error is passed on as one line."""
    pytest.importorskip("torch", reason="packaging loads the weights with torch")
    run = d2sm(
        capsys,
        "register",
        "--container-dir",
        REPO / "container",
        "--packager-python",
        sys.executable,
        "--",
        "--backend",
        "torchvision",
        "--weights",
        tmp_path / "missing.pth",
        "--class-names",
        "balloon",
    )
    assert run.code == 1
    assert run.err.startswith("error: packaging failed: ")
    assert "missing.pth" in run.err and run.err.count("\n") == 1
    assert len(versions()) == 1


def test_packaging_needs_the_container_folder(deployed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = d2sm(capsys, "register", "--", "--training-dir", "output", "--class-names", "balloon")
    assert run.code == 1
    assert run.err == (
        "error: no container/inference_server/package.py in this folder or its parents: run from the "
        "repository or pass --container-dir\n"
    )
