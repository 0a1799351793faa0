"""Fixtures of the client tests: a moto server on 127.0.0.1 holding what the CDK app deploys (its
stacks carry the outputs the app really synthesizes), and the batch pipeline played by a thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from moto.sagemaker.models import FakeTransformJob
from moto.server import ThreadedMotoServer

from .batch_pipeline import Pipeline
from .helpers import REGION, Deployment, accept_binary_invocations, deploy, serialize_canned_answers


@pytest.fixture(scope="session")
def synthesized_outputs(shipped) -> dict[str, dict[str, dict]]:
    """Stack name -> the Outputs section of its template, as the default configuration synthesizes."""
    synth = shipped(None)
    keys = ["shared", *synth.stacks.modes]
    return {synth.stack_name(key): synth.template(key).get("Outputs", {}) for key in keys}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    accept_binary_invocations()
    serialize_canned_answers()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Credentials for moto, every AWS endpoint pointed at it, nothing read from ~/.aws."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for name in [n for n in list(os.environ) if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    env = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def deployed(aws_env: dict[str, str], synthesized_outputs: dict[str, dict[str, dict]]) -> Deployment:
    return deploy(aws_env["AWS_ENDPOINT_URL"], synthesized_outputs)


@pytest.fixture
def pipeline(deployed, monkeypatch):
    """Starts Pipeline threads. moto marks a new transform job Completed inside its constructor; the
    client polling in parallel could see that before the thread sets the real status. Here a job
    is InProgress from the moment it exists, as SageMaker's is, whatever the interleaving."""
    created = FakeTransformJob.__init__

    def in_progress_at_creation(self, *args, **kwargs):
        created(self, *args, **kwargs)
        self.transform_job_status = "InProgress"

    monkeypatch.setattr(FakeTransformJob, "__init__", in_progress_at_creation)
    started: list[Pipeline] = []

    def start(answers, **kwargs) -> Pipeline:
        thread = Pipeline(deployed.bucket, answers, **kwargs)
        thread.start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop.set()
        thread.join(timeout=5)
