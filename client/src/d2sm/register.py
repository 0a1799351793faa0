"""`register`: (package,) upload and register a model.tar.gz as a new version in the model package group.

Packaging runs the container's own command (`python -m inference_server.package`) as a subprocess:
it loads the weights into the model and the staged artifact through the server's load_predictor,
which needs torch and detectron2. The client stays free of both (and of the container package), and
the container stays the one owner of what a valid artifact is.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from d2sm_contract import MODELS_PREFIX

from . import outputs, validate
from .aws import Aws, as_cli_error, aws_errors, error_code, split_s3_uri
from .errors import CliError
from .progress import emit, note

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
    folder = validate.find_container_dir(explicit)
    if folder is None:
        raise CliError(
            "no container/inference_server in this folder or its parents: run from the repository or "
            "pass --container-dir"
        )
    return folder


def package(packager_args: list[str], *, container_dir: Path, python: str, output: Path) -> None:
    """Run the container's packaging command; its one-line error becomes ours."""
    env = validate.container_env(container_dir)
    command = [python, "-m", "inference_server.package", *packager_args, "--output", str(output)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {result.returncode}"
        raise CliError(f"packaging failed: {last.removeprefix('error: ')}")


def check_s3_model(aws: Aws, uri: str) -> None:
    """The object must exist and be readable with these credentials (SageMaker reads it later with
    the execution role, which `cdk deploy` grants)."""
    bucket, key = split_s3_uri(uri)
    if not bucket or not key:
        raise CliError(f"{uri} names no object: give s3://bucket/key/model.tar.gz")
    try:
        head = aws.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        code = error_code(error)
        if code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}:
            raise CliError(f"{uri} does not exist") from None
        if code in {"403", "AccessDenied", "Forbidden"}:
            raise CliError(f"{uri} is not readable with these credentials (403)") from None
        raise as_cli_error(f"checking {uri}", error) from None
    except BotoCoreError as error:
        raise as_cli_error(f"checking {uri}", error) from None
    validate.check_size(head.get("ContentLength", 0), uri)


def pack_directory(folder: Path, output: Path) -> Path:
    """An extracted artifact (metadata.json at its top) packed as SageMaker expects; any other
    folder is refused, since registering it would serve nothing."""
    if not (folder / validate.METADATA_FILE).is_file():
        raise CliError(
            f"{folder} is a directory without {validate.METADATA_FILE}: give a model.tar.gz, an extracted "
            "artifact directory, or packaging flags after --"
        )
    note(f"packaging directory {folder} as a model.tar.gz")
    try:
        with tarfile.open(output, "w:gz") as archive:
            for path in sorted(folder.rglob("*")):
                if "__pycache__" not in path.parts:
                    archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    except OSError as error:
        raise CliError(f"cannot package {folder}: {error.strerror or error}") from None
    return output


def upload(aws: Aws, tarball: Path, bucket: str, group: str) -> str:
    """Content-addressed key: registering the same tarball twice reuses one object."""
    digest = hashlib.sha256()
    try:
        with tarball.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise CliError(f"cannot read {tarball}: {error.strerror or error}") from None
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
    ignore_check: bool = False,
):
    if bool(model) == bool(packager_args):
        raise CliError("give either a model.tar.gz (local or s3://) or packaging flags after --, not both")
    with tempfile.TemporaryDirectory() as scratch:
        # The artifact is checked first: a bad file fails before any AWS call.
        if packager_args:
            tarball = Path(scratch) / "model.tar.gz"
            package(
                packager_args,
                container_dir=find_container_dir(container_dir),
                python=packager_python or sys.executable,
                output=tarball,
            )
            note(f"packaged {tarball.stat().st_size} bytes")
            model = str(tarball)
        assert model is not None  # exactly one of a model and packaging flags was given (above)
        if not model.startswith("s3://"):
            tarball = Path(model)
            if tarball.is_dir():
                tarball = pack_directory(tarball, Path(scratch) / "model.tar.gz")
            elif not tarball.exists():
                raise CliError(f"{model} does not exist")
            elif not tarball.is_file():
                raise CliError(f"{model} is not a file")
            validate.check_tarball(
                tarball, container_dir=container_dir, python=packager_python, skip=ignore_check
            )
        shared = {} if (bucket and group) else aws.stack_outputs(outputs.SHARED)
        group = group or shared[outputs.MODEL_PACKAGE_GROUP_NAME]
        latest = latest_version(aws, group)
        if model.startswith("s3://"):
            check_s3_model(aws, model)
            model_data_url = model
        else:
            model_data_url = upload(aws, tarball, bucket or shared[outputs.ARTIFACTS_BUCKET_NAME], group)

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
    version = arn.rsplit("/", 1)[-1]
    emit(
        {
            "arn": arn,
            "version": int(version) if version.isdigit() else version,
            "model_data": model_data_url,
            "images_from": latest["ModelPackageArn"],
            "status": request["ModelApprovalStatus"],
        },
        f"{arn}\nmodel data {model_data_url}; images from {latest['ModelPackageArn']}; "
        f"status {request['ModelApprovalStatus']}",
    )


def add_parser(commands, common) -> None:
    reg = commands.add_parser(
        "register",
        parents=[common],
        help="check, (package,) upload and register a model.tar.gz as a new model package version",
        description="d2sm register model.tar.gz|DIR|s3://... | d2sm register [options] -- "
        "<python -m inference_server.package flags>",
    )
    reg.add_argument(
        "model",
        nargs="?",
        help="model.tar.gz or an extracted artifact directory to upload, or an s3:// URI used in place",
    )
    reg.add_argument(
        "--approve", action="store_true", help="register as Approved (default PendingManualApproval)"
    )
    reg.add_argument("--description", help="version description (default: the latest version's)")
    reg.add_argument("--bucket", help="bucket to upload to (default: the Shared stack's ArtifactsBucketName)")
    reg.add_argument(
        "--group", help="model package group (default: the Shared stack's ModelPackageGroupName)"
    )
    reg.add_argument(
        "--container-dir", type=Path, help="folder holding inference_server (default ./container)"
    )
    reg.add_argument(
        "--packager-python",
        help="python with the serving packages to package and check with (default: this one)",
    )
    reg.add_argument(
        "--no-check", action="store_true", help="register without checking the tarball (not recommended)"
    )
    reg.add_argument("--wait-delay", type=float, default=5.0, help=argparse.SUPPRESS)
    reg.epilog = "Everything after -- goes to the packaging command; it gets --output itself."
    reg.set_defaults(
        handler=lambda args: run(
            Aws.from_args(args),
            model=args.model,
            packager_args=args.packager_args,
            container_dir=args.container_dir,
            packager_python=args.packager_python,
            bucket=args.bucket,
            group=args.group,
            approve=args.approve,
            description=args.description,
            wait_delay_s=args.wait_delay,
            ignore_check=args.no_check,
        )
    )
