"""What the client tests share: a fake deployment in moto built from the stacks' synthesized outputs,
photos and results, and running `d2sm` in this process or as its own.

The stacks are real CloudFormation stacks in moto (their outputs are what the client reads); the
SageMaker resources are created through the SageMaker API because moto's CloudFormation skips some.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pycocotools.mask as mask_util
import pytest
import requests
from moto.sagemakerruntime.models import SageMakerRuntimeBackend
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse
from PIL import Image

import d2sm_contract as contract
from d2sm import cli as d2sm_cli
from d2sm.cli import main

REPO = Path(__file__).resolve().parents[2]
# The source root of the client this process imported: child processes get it as PYTHONPATH so they
# run the same code (the venv's editable install may point at another checkout).
CLIENT_SRC = Path(d2sm_cli.__file__).resolve().parents[1]

REGION = "us-east-1"
ACCOUNT = "123456789012"
APP = contract.DEFAULT_APP_NAME
GROUP = "detectron2-maskrcnn"
GPU_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/cdk-hnb659fds-container-assets:gpu"
CPU_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/cdk-hnb659fds-container-assets:cpu"
INITIAL_MODEL = "s3://cdk-hnb659fds-assets/abc123.tar.gz"
JOB_NAME_PREFIX = "detectron2-batch-"
ENDPOINTS = {"Realtime": "realtime-endpoint", "Serverless": "serverless-endpoint", "Async": "async-endpoint"}


def accept_binary_invocations() -> None:
    """moto 5.2.5's server decodes every request body as UTF-8, so InvokeEndpoint with JPEG bytes
    answers 500. Let sagemaker-runtime bodies through as latin-1 text: byte for byte, and still a str
    for moto's JSON bookkeeping of which canned answer a request got."""
    original = SageMakerRuntimeResponse.setup_class

    def setup_class(self, request, full_url=None, headers=None, use_raw_body=None):
        original(self, request, full_url, headers, use_raw_body=True)
        if isinstance(self.body, bytes):
            self.body = self.body.decode("latin-1")

    # Patching moto on purpose (mypy refuses any assignment to a method).
    SageMakerRuntimeResponse.setup_class = setup_class  # type: ignore[method-assign]


def serialize_canned_answers() -> None:
    """moto hands out canned InvokeEndpoint answers from a queue and a per-endpoint dict it creates
    on first use without a lock: two concurrent first calls (`invoke --concurrency 2`) can replace
    each other's dict and one answers 500. One call at a time inside moto; the client still sends
    them concurrently."""
    original = SageMakerRuntimeBackend.invoke_endpoint
    lock = threading.Lock()

    def invoke_endpoint(self, endpoint_name, unique_repr):
        with lock:
            return original(self, endpoint_name, unique_repr)

    SageMakerRuntimeBackend.invoke_endpoint = invoke_endpoint  # type: ignore[method-assign]  # as above


def stack(cloudformation, name: str, outputs: dict[str, object], resources: dict | None = None) -> None:
    template = {
        "Resources": resources or {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))


def stack_outputs(cloudformation, name: str) -> dict[str, str]:
    outputs = cloudformation.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


@dataclass
class Deployment:
    url: str
    bucket: str
    success_topic: str
    error_topic: str

    def client(self, service: str):
        return boto3.client(service, region_name=REGION)

    def canned_results(self, bodies: list[str]) -> None:
        """Queue InvokeEndpoint answers: each distinct request takes the next one."""
        results: list[dict[str, str]] = [
            {"Body": body, "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic"}
            for body in bodies
        ]
        response = requests.post(
            f"{self.url}/moto-api/static/sagemaker/endpoint-results", json={"results": results}, timeout=10
        )
        response.raise_for_status()

    def canned_async_results(self, results: list[tuple[bool, str]]) -> None:
        body: dict[str, list] = {
            "results": [{"is_failure": failed, "data": data} for failed, data in results]
        }
        requests.post(
            f"{self.url}/moto-api/static/sagemaker/async-endpoint-results", json=body, timeout=10
        ).raise_for_status()


def deployed_outputs(
    name: str, synthesized: dict[str, dict[str, dict]], values: dict[str, object]
) -> dict[str, object]:
    """Stack `name`'s outputs exactly as the app synthesizes them, each with the value CloudFormation
    would resolve: `values` gives the ones this fake deployment stands in for (its endpoint and bucket
    names, `{"Ref": ...}` to its own resources); a literal output keeps its synthesized value, and
    any other reads `unresolved:<key>`. A key in `values` the stacks no longer output fails here, so
    renaming an output in stacks/ breaks these tests as it would break the client."""
    outputs = synthesized[name]
    gone = sorted(set(values) - set(outputs))
    assert not gone, f"{name} no longer outputs {gone}; it outputs {sorted(outputs)}"
    return {
        key: values[key]
        if key in values
        else output["Value"]
        if isinstance(output["Value"], str)
        else f"unresolved:{key}"
        for key, output in outputs.items()
    }


def deploy(url: str, synthesized: dict[str, dict[str, dict]]) -> Deployment:
    """What `cdk deploy --all` of the default configuration leaves: its stacks with their outputs
    (`synthesized`: stack name -> the template's Outputs), a group with one version, three endpoints.
    Needs AWS_ENDPOINT_URL and credentials for moto in the environment."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    sagemaker = boto3.client("sagemaker", region_name=REGION)

    def create(suffix: str, values: dict[str, object], resources: dict | None = None) -> None:
        name = f"{APP}-{suffix}"
        stack(cloudformation, name, deployed_outputs(name, synthesized, values), resources)

    create(
        contract.SHARED,
        {contract.ARTIFACTS_BUCKET_NAME: {"Ref": "Artifacts"}, contract.MODEL_PACKAGE_GROUP_NAME: GROUP},
        {"Artifacts": {"Type": "AWS::S3::Bucket"}},
    )
    bucket = stack_outputs(cloudformation, f"{APP}-Shared")[contract.ARTIFACTS_BUCKET_NAME]
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    specification = {
        "SupportedContentTypes": ["image/jpeg", "image/png"],
        "SupportedResponseMIMETypes": ["application/json"],
    }
    version_arn = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelPackageDescription="Detectron2 Mask R-CNN",
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": GPU_IMAGE, "ModelDataUrl": INITIAL_MODEL}],
            **specification,
        },
        AdditionalInferenceSpecifications=[
            {
                "Name": "cpu",
                "Containers": [{"Image": CPU_IMAGE, "ModelDataUrl": INITIAL_MODEL}],
                **specification,
            }
        ],
    )["ModelPackageArn"]
    role = f"arn:aws:iam::{ACCOUNT}:role/execution"
    sagemaker.create_model(
        ModelName="Batch-model", PrimaryContainer={"ModelPackageName": version_arn}, ExecutionRoleArn=role
    )
    for mode, endpoint in ENDPOINTS.items():
        # As the CDK app does: the model takes its image and data from the registered version.
        sagemaker.create_model(
            ModelName=f"{mode}-model",
            PrimaryContainer={"ModelPackageName": version_arn},
            ExecutionRoleArn=role,
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName=f"{mode}-config",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{mode}-model",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.g4dn.xlarge",
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{mode}-config")
    # Each endpoint stack also names the config it deployed (what `verify` compares with the live one).
    for suffix in (contract.REALTIME, contract.SERVERLESS):
        create(
            suffix,
            {contract.ENDPOINT_NAME: ENDPOINTS[suffix], contract.ENDPOINT_CONFIG_NAME: f"{suffix}-config"},
        )
    create(
        contract.ASYNC,
        {
            contract.ENDPOINT_NAME: ENDPOINTS[contract.ASYNC],
            contract.ENDPOINT_CONFIG_NAME: f"{contract.ASYNC}-config",
            contract.ASYNC_INPUT_URI: f"s3://{bucket}/{contract.ASYNC_INPUT_PREFIX}",
            contract.ASYNC_OUTPUT_URI: f"s3://{bucket}/{contract.ASYNC_OUTPUT_PREFIX}",
            contract.ASYNC_FAILURE_URI: f"s3://{bucket}/{contract.ASYNC_FAILURE_PREFIX}",
            contract.ASYNC_SUCCESS_TOPIC_ARN: {"Ref": "SuccessTopic"},
            contract.ASYNC_ERROR_TOPIC_ARN: {"Ref": "ErrorTopic"},
        },
        {"SuccessTopic": {"Type": "AWS::SNS::Topic"}, "ErrorTopic": {"Type": "AWS::SNS::Topic"}},
    )
    create(
        contract.BATCH,
        {
            contract.BATCH_MODEL_NAME: "Batch-model",
            contract.BATCH_JOB_NAME_PREFIX: JOB_NAME_PREFIX,
            contract.BATCH_SUBMIT_URI: f"s3://{bucket}/{contract.BATCH_SUBMIT_PREFIX}/",
            contract.BATCH_INPUT_URI: f"s3://{bucket}/{contract.BATCH_INPUT_PREFIX}/",
            contract.BATCH_OUTPUT_URI: f"s3://{bucket}/{contract.BATCH_OUTPUT_PREFIX}/",
            contract.BATCH_NOTIFICATION_TOPIC_ARN: {"Ref": "Notifications"},
        },
        {"Notifications": {"Type": "AWS::SNS::Topic"}},
    )
    outputs = stack_outputs(cloudformation, f"{APP}-Async")
    return Deployment(
        url, bucket, outputs[contract.ASYNC_SUCCESS_TOPIC_ARN], outputs[contract.ASYNC_ERROR_TOPIC_ARN]
    )


def photo(path: Path, size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    """A JPEG/PNG of a light gradient with two darker blobs, deterministic per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([180 + 40 * x / width, 170 + 40 * y / height, np.full_like(x, 190.0)], axis=-1)
    pixels += rng.normal(0, 3, pixels.shape)
    pixels[(x - width * 0.3) ** 2 + (y - height * 0.5) ** 2 < (height * 0.25) ** 2] = (200, 40, 40)
    pixels[(x - width * 0.72) ** 2 + (y - height * 0.45) ** 2 < (height * 0.2) ** 2] = (40, 60, 200)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def detections(width: int = 160, height: int = 120) -> dict:
    """A result as the container writes it: two instances with COCO RLE masks (circles) and boxes."""
    y, x = np.mgrid[0:height, 0:width]
    instances = []
    for class_id, name, score, (cx, cy, r) in [
        (0, "balloon", 0.98, (width * 0.3, height * 0.5, height * 0.25)),
        (1, "person", 0.61, (width * 0.72, height * 0.45, height * 0.2)),
    ]:
        mask = ((x - cx) ** 2 + (y - cy) ** 2 < r**2).astype(np.uint8)
        rle = mask_util.encode(np.asfortranarray(mask))
        instances.append(
            {
                "class_id": class_id,
                "class_name": name,
                "score": score,
                "box": [cx - r, cy - r, cx + r, cy + r],
                "mask": {"size": list(rle["size"]), "counts": rle["counts"].decode()},
            }
        )
    return {"image": {"height": height, "width": width}, "instances": instances}


def error_object(code: str = "invalid_input", message: str = "the body is not a JPEG") -> dict:
    return {"error": {"code": code, "message": message, "request_id": "req-1"}}


@dataclass
class Run:
    code: int
    out: str
    err: str


def d2sm(capsys: pytest.CaptureFixture, *args: str | Path) -> Run:
    """The console script's entry point in this process (so tests can reach into moto's backends)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def d2sm_process(
    *args: str | Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """The installed `d2sm` console script as a separate process."""
    script = Path(sys.executable).with_name("d2sm")
    env = {**env, "PYTHONPATH": str(CLIENT_SRC)}
    return subprocess.run(
        [str(script), *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
