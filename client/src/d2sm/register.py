"""`register`: (package,) upload and register a model.tar.gz as a new version in the model package group.

Packaging runs the container's own command (`python -m inference_server.package`) as a subprocess:
it loads the weights into the model and the staged artifact through the server's load_predictor,
which needs torch and detectron2. The client stays free of both (and of the container package), and
the container stays the one owner of what a valid artifact is.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from botocore.exceptions import WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from .aws import Aws, aws_errors, split_s3_uri
from .errors import CliError
from .progress import say

MODELS_PREFIX = "models"
# Container fields that describe the old model data; the new version gets its own ModelDataUrl.
MODEL_DATA_FIELDS = ("ModelDataUrl", "ModelDataSource", "ModelDataETag")
# SageMaker has no built-in model package waiter; botocore builds one from this model.
PACKAGE_WAITER = WaiterModel(
    {
        "version": 2,
        "waiters": {
            "ModelPackageCompleted": {
                "operation": "DescribeModelPackage",
                "delay": 5,
                "maxAttempts": 120,
                "acceptors": [
                    {
                        "state": "success",
                        "matcher": "path",
                        "argument": "ModelPackageStatus",
                        "expected": "Completed",
                    },
                    {
                        "state": "failure",
                        "matcher": "path",
                        "argument": "ModelPackageStatus",
                        "expected": "Failed",
                    },
                ],
            }
        },
    }
)


def find_container_dir(explicit: Path | None) -> Path:
    """The folder holding the inference_server package: --container-dir, else ./container upwards."""
    if explicit is not None:
        candidates = [explicit]
    else:
        cwd = Path.cwd().resolve()
        candidates = [folder / "container" for folder in (cwd, *cwd.parents)]
    for folder in candidates:
        if (folder / "inference_server" / "package.py").is_file():
            return folder
    where = explicit or "this folder or its parents"
    raise CliError(
        f"no container/inference_server/package.py in {where}: run from the repository or pass --container-dir"
    )


def package(packager_args: list[str], *, container_dir: Path, python: str, output: Path) -> None:
    """Run the container's packaging command; its one-line error becomes ours."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(container_dir), os.environ.get("PYTHONPATH")])),
    )
    command = [python, "-m", "inference_server.package", *packager_args, "--output", str(output)]
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {result.returncode}"
        raise CliError(f"packaging failed: {last.removeprefix('error: ')}")


def upload(aws: Aws, tarball: Path, bucket: str, group: str) -> str:
    """Content-addressed key: registering the same tarball twice reuses one object."""
    digest = hashlib.sha256()
    with tarball.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    key = f"{MODELS_PREFIX}/{group}/{digest.hexdigest()[:16]}/model.tar.gz"
    with aws_errors(f"uploading {tarball} to s3://{bucket}/{key}"):
        aws.s3.upload_file(str(tarball), bucket, key)
    return f"s3://{bucket}/{key}"


def with_model_data(specification: dict, model_data_url: str) -> dict:
    specification = copy.deepcopy(specification)
    for container in specification.get("Containers", []):
        for field in MODEL_DATA_FIELDS:
            container.pop(field, None)
        container["ModelDataUrl"] = model_data_url
    return specification


def latest_version(aws: Aws, group: str) -> dict:
    # The highest version number, not the newest CreationTime: versions created within one clock
    # tick would tie.
    with aws_errors(f"listing the versions in model package group {group}"):
        pages = aws.sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group)
        summaries = sorted(
            (s for page in pages for s in page["ModelPackageSummaryList"]),
            key=lambda s: s.get("ModelPackageVersion", 0),
            reverse=True,
        )
    if not summaries:
        raise CliError(
            f"model package group {group} has no version to take the inference images from: deploy the "
            "Shared stack first"
        )
    with aws_errors("describing the latest model package version"):
        return aws.sagemaker.describe_model_package(ModelPackageName=summaries[0]["ModelPackageArn"])


def run(
    aws: Aws,
    *,
    model: str | None,
    packager_args: list[str],
    container_dir: Path | None,
    packager_python: str | None,
    bucket: str | None,
    group: str | None,
    approve: bool,
    description: str | None,
    wait_delay_s: float,
):
    if bool(model) == bool(packager_args):
        raise CliError("give either a model.tar.gz (local or s3://) or packaging flags after --, not both")
    shared = None if (bucket and group) else aws.stack_outputs("Shared")
    group = group or shared["ModelPackageGroupName"]
    latest = latest_version(aws, group)

    with tempfile.TemporaryDirectory() as scratch:
        if packager_args:
            tarball = Path(scratch) / "model.tar.gz"
            package(
                packager_args,
                container_dir=find_container_dir(container_dir),
                python=packager_python or sys.executable,
                output=tarball,
            )
            say(f"packaged {tarball.stat().st_size} bytes")
            model = str(tarball)
        if model.startswith("s3://"):
            split_s3_uri(model)
            model_data_url = model
        else:
            tarball = Path(model)
            if not tarball.is_file():
                raise CliError(f"{model} does not exist")
            model_data_url = upload(aws, tarball, bucket or shared["ArtifactsBucketName"], group)

    request = {
        "ModelPackageGroupName": group,
        "ModelPackageDescription": description
        or latest.get("ModelPackageDescription", "")
        or f"registered by d2sm from {model_data_url}",
        "InferenceSpecification": with_model_data(latest["InferenceSpecification"], model_data_url),
        "ModelApprovalStatus": "Approved" if approve else "PendingManualApproval",
    }
    additional = [
        with_model_data(s, model_data_url) for s in latest.get("AdditionalInferenceSpecifications", [])
    ]
    if additional:
        request["AdditionalInferenceSpecifications"] = additional
    with aws_errors(f"creating a model package version in {group}"):
        arn = aws.sagemaker.create_model_package(**request)["ModelPackageArn"]
    waiter = create_waiter_with_client("ModelPackageCompleted", PACKAGE_WAITER, aws.sagemaker)
    try:
        waiter.wait(ModelPackageName=arn, WaiterConfig={"Delay": wait_delay_s})
    except WaiterError as error:
        reason = (error.last_response or {}).get("ModelPackageStatusDetails", error.last_response)
        raise CliError(f"model package {arn} did not complete: {reason}") from None
    say(f"{arn}")
    say(
        f"model data {model_data_url}; images from {latest['ModelPackageArn']}; status {request['ModelApprovalStatus']}"
    )
