"""The batch pipeline's synthesized state machine, run by moto's Step Functions interpreter.

moto's server runs in this process (`ThreadedMotoServer`) on 127.0.0.1: its interpreter calls the
AWS SDK integrations against moto's own backends, and the test can stand in where moto has no
runtime:
- Lambda: moto runs functions only in Docker; the error-count function's real handler is called in
  place of the container (`run_lambdas_in_process`).
- Transform jobs: moto creates them `Completed` at once and never fails one; `script_job_statuses`
  makes DescribeTransformJob walk through the statuses a test names.
- Job names: moto replaces a job created twice under one name and accepts any name;
  `enforce_job_names` makes CreateTransformJob refuse both as SageMaker does.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import requests
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.sagemaker.exceptions import ResourceInUseException, ValidationError
from moto.sagemaker.models import SageMakerModelBackend
from moto.server import ThreadedMotoServer


def interpreter_missing() -> str | None:
    """Why moto's Step Functions interpreter cannot run here, or None.

    Its ASL parser is generated with ANTLR 4.13; detectron2's omegaconf pins the 4.9 runtime, which
    cannot load it. A virtualenv without detectron2 (`make test`'s .venv) resolves 4.13.
    """
    version = importlib.metadata.version("antlr4-python3-runtime")
    if tuple(int(part) for part in version.split(".")[:2]) < (4, 10):
        return (
            f"moto's Step Functions interpreter needs antlr4-python3-runtime >= 4.10, found {version} "
            "(pinned by detectron2's omegaconf): run these tests in a virtualenv without detectron2"
        )
    return None


JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
REGION = "us-east-1"
ACCOUNT = "123456789012"
INTERPRETER_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@dataclass
class Moto:
    endpoint: str

    def client(self, service: str):
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self) -> None:
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        requests.post(
            f"{self.endpoint}/moto-api/config", json=INTERPRETER_CONFIG, timeout=10
        ).raise_for_status()


@contextmanager
def moto_server(monkeypatch) -> Iterator[Moto]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # The interpreter sends its SDK calls to localhost:$MOTO_PORT.
    monkeypatch.setenv("MOTO_PORT", str(port))
    moto = Moto(f"http://{host}:{port}")
    try:
        moto.reset()
        yield moto
    finally:
        requests.post(
            f"{moto.endpoint}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": False}, "lambda": {"use_docker": True}},
            timeout=10,
        )
        server.stop()


def run_lambdas_in_process(monkeypatch, handlers: dict[str, Callable[[dict], dict]]) -> None:
    """Invoke `handlers[function name](payload)` where moto would start a Docker container."""

    def invoke(backend, function_name, qualifier, body, headers, response_headers):
        name = function_name.split(":")[6] if function_name.startswith("arn:") else function_name
        return json.dumps(handlers[name](json.loads(body))).encode()

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)


def script_job_statuses(monkeypatch, script: dict[str, list[tuple[str, str | None]]]) -> list[str]:
    """DescribeTransformJob of `name` answers the next (status, failure reason) of `script[name]`, then
    keeps the last one. Returns the names described, in order."""
    described: list[str] = []
    original = SageMakerModelBackend.describe_transform_job

    def describe(backend, transform_job_name):
        described.append(transform_job_name)
        steps = script.get(transform_job_name)
        job = backend.transform_jobs.get(transform_job_name)
        if steps and job is not None:
            status, reason = steps.pop(0) if len(steps) > 1 else steps[0]
            job.transform_job_status = status
            job.failure_reason = reason
        return original(backend, transform_job_name)

    monkeypatch.setattr(SageMakerModelBackend, "describe_transform_job", describe)
    return described


def enforce_job_names(monkeypatch) -> None:
    """CreateTransformJob refuses an existing name (ResourceInUse) and an invalid one
    (ValidationException)."""
    original = SageMakerModelBackend.create_transform_job

    def create(backend, transform_job_name, **kwargs):
        if not JOB_NAME.match(transform_job_name):
            raise ValidationError(
                f"1 validation error detected: Value '{transform_job_name}' at 'transformJobName' failed to "
                f"satisfy constraint: Member must satisfy regular expression pattern: {JOB_NAME.pattern}"
            )
        if transform_job_name in backend.transform_jobs:
            raise ResourceInUseException(f"Transform job {transform_job_name} already exists")
        return original(backend, transform_job_name, **kwargs)

    monkeypatch.setattr(SageMakerModelBackend, "create_transform_job", create)


def miss_first_lookup(monkeypatch, name: str) -> None:
    """The first DescribeTransformJob of `name` answers "not found", as when another execution creates
    the job just after this one looked."""
    described = SageMakerModelBackend.describe_transform_job
    missed: list[str] = []

    def describe(backend, transform_job_name):
        if transform_job_name == name and not missed:
            missed.append(name)
            raise ValidationError(f"Could not find transform job '{name}'.")
        return described(backend, transform_job_name)

    monkeypatch.setattr(SageMakerModelBackend, "describe_transform_job", describe)


def resolve_definition(definition: Any, tokens: dict[str, str]) -> str:
    """The DefinitionString as CloudFormation would render it, with each intrinsic in `tokens`
    (keyed by its compact JSON, e.g. '{"Ref":"AWS::Partition"}') replaced by a value."""
    if isinstance(definition, str):
        return definition
    separator, parts = definition["Fn::Join"]
    rendered = []
    for part in parts:
        if isinstance(part, str):
            rendered.append(part)
            continue
        key = json.dumps(part, separators=(",", ":"), sort_keys=True)
        if key not in tokens:
            raise KeyError(f"no value for {key}")
        rendered.append(tokens[key])
    return separator.join(rendered)


def wait_for_execution(sfn, execution_arn: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        execution = sfn.describe_execution(executionArn=execution_arn)
        if execution["status"] != "RUNNING":
            return execution
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still running after {timeout_s} s")
        time.sleep(0.2)


def states_entered(sfn, execution_arn: str) -> list[str]:
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return [
        event["stateEnteredEventDetails"]["name"] for event in events if "stateEnteredEventDetails" in event
    ]


def s3_object_created_event(bucket: str, key: str) -> dict:
    """What EventBridge delivers for an S3 PutObject (the shape moto's S3 sends, too)."""
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2026-11-25T12:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 0, "etag": "d41d8cd98f00b204e9800998ecf8427e"},
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": ACCOUNT,
            "reason": "PutObject",
        },
    }
