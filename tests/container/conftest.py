"""Fixtures for the container tests: real artifacts, and the real server process serving them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .artifacts import detectron2_model_dir, torchvision_model_dir  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DIR = REPO_ROOT / "container"
# Everything the server reads from its environment: cleared so a developer's shell cannot change a test.
SERVER_ENV_VARS = (
    "INFERENCE_MODE",
    "SAGEMAKER_BATCH",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB",
    "SAGEMAKER_BIND_TO_PORT",
    "MODEL_DIR",
    "MAX_IMAGE_PIXELS",
    "REQUEST_TIMEOUT_S",
    "BATCH_RECORD_ERRORS",
    "LOG_LEVEL",
    "MODEL_COPIES",
    "MIXED_PRECISION",
    "MAX_QUEUE_DEPTH",
    "UNHEALTHY_AFTER_ERRORS",
    "HEAP_POLICY",
    "LOG_FORMAT",
    "READ_TIMEOUT_S",
    "MEMORY_LIMIT_MB",
)
# Generous: a busy 2-core machine imports torch and loads detectron2 in tens of seconds.
READY_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json_record(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "message" in record else None


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """The log as text: each JSON record as its message (and its traceback below it), any other
        line (the interpreter's own, a library printing) as it is."""
        lines = []
        for line in self.log_path.read_text().splitlines():
            record = _json_record(line)
            if record is None:
                lines.append(line)
                continue
            lines.append(str(record["message"]))
            if "traceback" in record:
                lines.append(str(record["traceback"]))
        return "\n".join(lines) + "\n"

    def records(self) -> list[dict]:
        """The log's JSON records, in order."""
        return [record for line in self.log_path.read_text().splitlines() if (record := _json_record(line))]

    def raw_log(self) -> str:
        return self.log_path.read_text()

    def ping(self, timeout: float = 5) -> requests.Response:
        return requests.get(f"{self.url}/ping", timeout=timeout)

    def invoke(
        self, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        return requests.post(
            f"{self.url}/invocations",
            data=body,
            headers={"Content-Type": content_type, **(headers or {})},
            timeout=READY_TIMEOUT_S,
        )

    def wait_until_listening(self) -> None:
        self._wait_for(lambda response: True, "listening")

    def wait_until_ready(self) -> None:
        self._wait_for(lambda response: response.status_code == 200, "ready")

    def _wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if condition(self.ping()):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not {what} after {READY_TIMEOUT_S} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ServerLauncher:
    """Starts `python -m inference_server` as a real process on a free 127.0.0.1 port."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[RunningServer] = []

    def __call__(
        self,
        model_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        wait_ready: bool = True,
        port: int | None = None,
    ) -> RunningServer:
        port = port or free_port()
        process_env = {key: value for key, value in os.environ.items() if key not in SERVER_ENV_VARS}
        process_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(CONTAINER_DIR), os.environ.get("PYTHONPATH")])
        )
        process_env.update(env or {})
        log_path = self.log_dir / f"server-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "inference_server", "--host", "127.0.0.1", "--port", str(port)]
                + ["--model-dir", str(model_dir)],
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = RunningServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
        self.servers.append(server)
        if wait_ready:
            server.wait_until_ready()
        return server

    def close(self) -> None:
        for server in self.servers:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerLauncher]:
    """Servers started in one test; killed when it ends."""
    launcher = ServerLauncher(tmp_path)
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerLauncher]:
    """Servers shared by a module's tests (model loading is the slow part); killed after the module."""
    launcher = ServerLauncher(tmp_path_factory.mktemp("servers"))
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def realtime_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    """One real-time server on the torchvision artifact for the modules that leave it as they found
    it (test_server.py, test_hostile_inputs.py): each started server loads a model."""
    launcher = ServerLauncher(tmp_path_factory.mktemp("realtime-server"))
    try:
        yield launcher(request.getfixturevalue("torchvision_model_dir"))
    finally:
        launcher.close()
