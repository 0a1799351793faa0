"""Server behaviour across its life and its modes, on real torchvision artifacts: readiness, one model
copy for parallel clients, internal errors, user handler overrides, mode-derived limits, batch
per-record errors and graceful SIGTERM.

Instrumentation goes where a user's would: a code/inference.py written into a copy of the artifact.
"""

from __future__ import annotations

import shutil
import signal
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from .artifacts import TEST_IMAGES
from .image_files import image_bytes, upright_rgb

INPUT_PHOTO = next(path for path in TEST_IMAGES if path.name == "input.jpg")
MIB = 1024 * 1024

# Records each model load, how many predictions run at once and which requests reached predict_fn;
# can hold loading or a prediction until the test removes a file, make the warm-up take a set time
# (the server's first estimate of an inference), fail the second copy's load, and fails on an
# all-black image.
INSTRUMENTED_INFERENCE_PY = """
    import os
    import threading
    import time
    from pathlib import Path

    from inference_server import artifact

    RECORDS = Path(os.environ["TEST_RECORD_DIR"])
    _lock = threading.Lock()
    _running = 0
    _loads = 0


    def _wait_while(name):
        while (RECORDS / name).exists():
            time.sleep(0.05)


    def model_fn(model_dir):
        global _loads
        _wait_while("hold-load")
        with _lock:
            _loads += 1
            with open(RECORDS / "loads", "a") as log:
                log.write(f"{os.getpid()}\\n")
            if _loads == 2 and (RECORDS / "fail-second-load").exists():
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return artifact.load_predictor(Path(model_dir))


    def predict_fn(data, model, context):
        global _running
        with _lock:
            _running += 1
            with open(RECORDS / "running", "a") as log:
                log.write(f"{_running}\\n")
            with open(RECORDS / "requests", "a") as log:
                log.write(f"{context.request_id}\\n")
        try:
            (RECORDS / "predicting").touch()
            warm_up_seconds = RECORDS / "warm-up-seconds"
            if context.request_id == "warm-up" and warm_up_seconds.exists():
                time.sleep(float(warm_up_seconds.read_text()))
                return None
            _wait_while("hold-predict")
            if not data.any():
                raise RuntimeError("secret internal detail")
            return model(data)
        finally:
            with _lock:
                _running -= 1
                with open(RECORDS / "finished", "a") as log:
                    log.write("1\\n")
"""

# Replaces decoding and encoding: a body "H W" becomes a grey image; the answer is a count.
OVERRIDING_INFERENCE_PY = """
    import json

    import numpy as np


    def input_fn(body, content_type):
        assert content_type == "application/x-test-size", content_type
        height, width = (int(value) for value in body.split())
        return np.full((height, width, 3), 127, np.uint8)


    def output_fn(prediction, accept):
        document = {"height": prediction.image_height, "width": prediction.image_width}
        return json.dumps(document), "application/vnd.test+json"
"""


def artifact_with_code(model_dir: Path, dest: Path, inference_py: str) -> Path:
    copy = shutil.copytree(model_dir, dest / "model")
    (copy / "code").mkdir(exist_ok=True)
    (copy / "code" / "inference.py").write_text(textwrap.dedent(inference_py))
    return copy


def error_of(response: requests.Response) -> dict:
    return response.json()["error"]


class Instrumented:
    """A server on the instrumented artifact, plus the files it records to."""

    def __init__(
        self,
        launcher,
        model_dir: Path,
        records: Path,
        hold_load: bool,
        env=None,
        warm_up_s: float | None = None,
        fail_second_load: bool = False,
    ) -> None:
        records.mkdir(parents=True, exist_ok=True)
        self.records = records
        if hold_load:
            (records / "hold-load").touch()
        if warm_up_s is not None:
            (records / "warm-up-seconds").write_text(str(warm_up_s))
        if fail_second_load:
            (records / "fail-second-load").touch()
        self.server = launcher(model_dir, {"TEST_RECORD_DIR": str(records), **(env or {})}, wait_ready=False)

    before_ready: list[requests.Response]
    loads_before_ready: list[str]

    def release_load(self) -> None:
        (self.records / "hold-load").unlink(missing_ok=True)
        self.server.wait_until_ready()

    def lines(self, name: str) -> list[str]:
        path = self.records / name
        return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def instrumented_model_dir(torchvision_model_dir, tmp_path_factory) -> Path:
    return artifact_with_code(
        torchvision_model_dir, tmp_path_factory.mktemp("instrumented"), INSTRUMENTED_INFERENCE_PY
    )


@pytest.fixture(scope="module")
def instrumented(start_module_server, instrumented_model_dir, tmp_path_factory) -> Instrumented:
    """Started with its model load held: what the server answered before the release is kept for the
    readiness test, then the model loads and the server is ready for the module's tests."""
    held = Instrumented(
        start_module_server,
        instrumented_model_dir,
        tmp_path_factory.mktemp("records"),
        hold_load=True,
        # 8 queued requests on a busy 2-core machine can outlast the real-time 60 s budget; the
        # timeout has its own test, here every queued request must be served.
        env={"REQUEST_TIMEOUT_S": "3600"},
    )
    held.server.wait_until_listening()
    held.before_ready = [held.server.ping(), held.server.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg")]
    held.loads_before_ready = held.lines("loads")
    held.release_load()
    return held


def test_ping_is_503_until_the_model_is_loaded_and_warmed_up(instrumented):
    ping, invocation = instrumented.before_ready
    assert (ping.status_code, error_of(ping)["code"]) == (503, "model_not_ready")
    assert (invocation.status_code, error_of(invocation)["code"]) == (503, "model_not_ready")
    assert instrumented.loads_before_ready == []
    assert instrumented.server.ping().status_code == 200
    # The warm-up ran one prediction before the first 200.
    assert instrumented.lines("running") and "warmed up" in instrumented.server.log()


def test_parallel_clients_share_one_model_copy_one_prediction_at_a_time(instrumented):
    jpeg = INPUT_PHOTO.read_bytes()
    with ThreadPoolExecutor(max_workers=8) as clients:
        responses = list(clients.map(lambda _: instrumented.server.invoke(jpeg, "image/jpeg"), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.content for r in responses}) == 1 and responses[0].json()["instances"]
    # One load, in the server process itself (not in a worker process), and never two predictions at once.
    assert instrumented.lines("loads") == [str(instrumented.server.process.pid)]
    assert len(instrumented.lines("running")) >= 9 and set(instrumented.lines("running")) == {"1"}


def test_internal_error_is_500_with_a_request_id_and_no_details(instrumented):
    black = image_bytes(np.zeros((48, 64, 3), np.uint8))
    response = instrumented.server.invoke(black, "image/png")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error" and error["request_id"] in error["message"]
    assert "secret" not in response.text and "Traceback" not in response.text
    log = instrumented.server.log()
    assert f"request {error['request_id']} failed with an internal error" in log
    assert "RuntimeError: secret internal detail" in log
    # Still serving.
    assert instrumented.server.ping().status_code == 200
    assert (
        instrumented.server.invoke(image_bytes(np.full((48, 64, 3), 90, np.uint8)), "image/png").status_code
        == 200
    )


def test_sigterm_finishes_the_request_in_flight_and_exits_zero(
    start_server, instrumented_model_dir, tmp_path
):
    held = Instrumented(start_server, instrumented_model_dir, tmp_path / "records", hold_load=False)
    held.server.wait_until_ready()
    (held.records / "predicting").unlink()  # touched by the warm-up
    (held.records / "hold-predict").touch()
    responses: list[requests.Response] = []
    client = threading.Thread(
        target=lambda: responses.append(held.server.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg"))
    )
    client.start()
    deadline = time.monotonic() + 60
    while not (held.records / "predicting").exists():
        assert time.monotonic() < deadline, "the request never reached predict_fn"
        time.sleep(0.05)

    held.server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:  # new connections are refused once shutdown begins
        try:
            held.server.ping(timeout=1)
        except requests.ConnectionError:
            break
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.1)
    assert held.server.process.poll() is None  # waiting for the request in flight

    (held.records / "hold-predict").unlink()
    client.join(timeout=120)
    assert [r.status_code for r in responses] == [200] and responses[0].json()["instances"]
    assert held.server.process.wait(timeout=30) == 0
    assert "Finished server process" in held.server.log()


def test_user_handlers_replace_the_defaults(start_module_server, torchvision_model_dir, tmp_path_factory):
    model_dir = artifact_with_code(
        torchvision_model_dir, tmp_path_factory.mktemp("overriding"), OVERRIDING_INFERENCE_PY
    )
    server = start_module_server(model_dir)
    # Content-Type, Accept and custom attributes are the user's business once input_fn/output_fn are theirs.
    response = server.invoke(
        b"40 60",
        "application/x-test-size",
        {
            "Accept": "text/csv",
            "X-Amzn-SageMaker-Custom-Attributes": "trace=abc",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.test+json"
    assert response.json()["height"] == 40 and response.json()["width"] == 60
    log = server.log()
    assert "code/inference.py overrides input_fn, output_fn" in log and "warm-up skipped" in log


@pytest.fixture(scope="module")
def serverless(start_module_server, torchvision_model_dir):
    return start_module_server(
        torchvision_model_dir, {"INFERENCE_MODE": "serverless", "MAX_IMAGE_PIXELS": "100000"}
    )


def test_serverless_limits(serverless):
    over_4_mib = serverless.invoke(b"\0" * (4 * MIB + 1), "image/jpeg")
    assert over_4_mib.status_code == 413
    assert "exceeds 4194304 bytes (4 MiB), the limit in serverless mode" in error_of(over_4_mib)["message"]
    assert (
        serverless.invoke(b"\0" * (4 * MIB), "image/jpeg").status_code == 400
    )  # within the limit: decoded, not an image
    photo = serverless.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg")  # 640x480 = 307200 pixels
    assert photo.status_code == 413 and error_of(photo)["code"] == "image_too_large"
    assert "640x480 = 307200 pixels; the limit is 100000" in error_of(photo)["message"]
    crop = image_bytes(upright_rgb(INPUT_PHOTO)[:200, :300])
    assert serverless.invoke(crop, "image/png").status_code == 200


@pytest.fixture(scope="module")
def batch(start_module_server, torchvision_model_dir):
    return start_module_server(
        torchvision_model_dir, {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"}
    )


def test_batch_answers_bad_records_with_error_objects(batch):
    corrupt = batch.invoke(b"\xff\xd8 not a jpeg", "image/jpeg")
    assert corrupt.status_code == 200 and error_of(corrupt)["code"] == "invalid_input"
    oversized = batch.invoke(b"\0" * (MIB + 1), "image/jpeg")
    assert oversized.status_code == 200 and error_of(oversized)["code"] == "payload_too_large"
    good = batch.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg")
    assert good.status_code == 200 and good.json()["instances"]
    # A job-wide misconfiguration is not a record's fault: it still fails loudly.
    assert batch.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg", {"Accept": "text/csv"}).status_code == 406
    parameters = requests.get(f"{batch.url}/execution-parameters", timeout=5).json()  # one copy on CPU
    assert parameters == {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 1}


def test_a_model_that_does_not_load_stops_the_server_with_status_1(start_server, tmp_path):
    # Exiting at once lets SageMaker report the failure now, not after the health-check timeout.
    server = start_server(tmp_path, wait_ready=False)
    assert server.process.wait(timeout=120) == 1
    log = server.log()
    assert "model failed to load" in log and "metadata.json is missing" in log
