"""`d2sm register` against moto: upload, a new version copying the group's images, approval."""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from .helpers import CPU_IMAGE, GPU_IMAGE, GROUP, REGION, d2sm

REPO = Path(__file__).resolve().parents[2]


CONTAINER = REPO / "container"
METADATA = {"format_version": 1, "backend": "torchvision", "class_names": ["balloon"]}


def tarball(
    path: Path, metadata: dict | None = METADATA, weights_bytes: int = 2 << 20, seed: int = 0
) -> Path:
    """A model.tar.gz with the artifact's layout: metadata.json and weights-sized random bytes."""
    members = {"model_final.pth": random.Random(seed).randbytes(weights_bytes)}
    if metadata is not None:
        members["metadata.json"] = json.dumps(metadata).encode()
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
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

    run = d2sm(capsys, "register", model, "--approve", "--wait-delay", "0.1", "--container-dir", CONTAINER)

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
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="elsewhere")
    s3.put_object(Bucket="elsewhere", Key="v7/model.tar.gz", Body=tarball(tmp_path / "m.tar.gz").read_bytes())
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
        "error: no container/inference_server in this folder or its parents: run from the "
        "repository or pass --container-dir\n"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda path: path.write_text("hello\n") and path,
            "is 6 bytes: too small to be a model.tar.gz (--no-check to register anyway)",
        ),
        (
            lambda path: path.write_bytes(random.Random(1).randbytes(4096)) and path,
            "is not a readable .tar.gz",
        ),
        (lambda path: tarball(path, metadata=None), "has no metadata.json at its top"),
        (
            lambda path: tarball(path, metadata={"backend": "caffe", "class_names": ["a"]}),
            "metadata.json is invalid: backend: Input should be 'detectron2' or 'torchvision'",
        ),
        (
            lambda path: tarball(path, metadata={"backend": "torchvision", "class_names": ["a", "a"]}),
            "metadata.json is invalid: class_names: must be unique, repeated: a",
        ),
        (
            lambda path: tarball(path, metadata={"backend": "detectron2", "class_names": ["a"]}),
            "lacks config.yaml, which the detectron2 backend loads",
        ),
        (lambda path: tarball(path, weights_bytes=50_000), "model_final.pth is 50000 bytes, too small"),
    ],
)
def test_invalid_tarball_is_refused_before_any_upload(deployed, tmp_path, capsys, make, message):
    model = make(tmp_path / "model.tar.gz")
    run = d2sm(capsys, "register", model, "--container-dir", CONTAINER)
    assert run.code == 1
    assert message in run.err and run.err.count("\n") == 1, run.err
    assert len(versions()) == 1
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=deployed.bucket)


def test_metadata_checked_by_the_client_without_the_container_folder(deployed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tarball(tmp_path / "model.tar.gz", metadata={"backend": "caffe", "class_names": ["a"]})
    run = d2sm(capsys, "register", model)
    assert run.code == 1
    assert (
        run.err
        == (
            "note: no container/ folder here (--container-dir): checking metadata.json's basics only\nerror: "
        )
        + run.err.split("error: ", 1)[1]
    )
    assert run.err.count("\n") == 2
    assert "backend: must be one of detectron2, torchvision" in run.err


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://no-such-bucket/model.tar.gz", "error: s3://no-such-bucket/model.tar.gz does not exist\n"),
        ("s3://elsewhere/missing.tar.gz", "error: s3://elsewhere/missing.tar.gz does not exist\n"),
        ("s3://elsewhere", "error: s3://elsewhere names no object: give s3://bucket/key/model.tar.gz\n"),
    ],
)
def test_s3_source_must_exist(deployed, capsys, uri, message):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="elsewhere")
    run = d2sm(capsys, "register", uri)
    assert (run.code, run.err) == (1, message)
    assert len(versions()) == 1


def test_directory_with_an_artifact_is_packaged(deployed, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    with tarfile.open(tarball(tmp_path / "source.tar.gz")) as archive:
        archive.extractall(folder, filter="data")
    run = d2sm(capsys, "register", folder, "--wait-delay", "0.1", "--container-dir", CONTAINER)
    assert run.code == 0, run.err
    assert f"packaging directory {folder} as a model.tar.gz" in run.err
    uri = versions()[-1]["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert sorted(archive.getnames()) == ["metadata.json", "model_final.pth"]


def test_directory_without_an_artifact_is_refused(deployed, tmp_path, capsys):
    (tmp_path / "somedir").mkdir()
    run = d2sm(capsys, "register", tmp_path / "somedir")
    assert (run.code, run.err) == (
        1,
        f"error: {tmp_path / 'somedir'} is a directory without metadata.json: give a model.tar.gz, an "
        "extracted artifact directory, or packaging flags after --\n",
    )
