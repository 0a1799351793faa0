"""`/ping` over real HTTP means "can serve": it fails while the only model copy is hung in predict_fn
or has failed its last UNHEALTHY_AFTER_ERRORS inferences, and requests are then refused at once.

The faults come from a code/inference.py in a copy of the torchvision test artifact, as a user's
would; a hang lasts until the test removes a file, so nothing races a sleep."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from .artifacts import TEST_IMAGES
from .test_server_lifecycle import artifact_with_code, error_of

PHOTO = next(path for path in TEST_IMAGES if path.name == "input.jpg")
# A generous bound on a wait; the watchdog's own bound is 2 x REQUEST_TIMEOUT_S (16 s here: 8 s, so
# that a photo's inference fits the timeout on a loaded 2-core machine).
DEADLINE_S = 120

# Warm-up runs the model; every request after it hangs while RECORDS/hold exists.
HANGING_INFERENCE_PY = """
    import os
    import time
    from pathlib import Path

    HOLD = Path(os.environ["TEST_RECORD_DIR"]) / "hold"


    def predict_fn(data, model, context):
        if context.request_id != "warm-up":
            (HOLD.parent / "predicting").touch()
            while HOLD.exists():
                time.sleep(0.05)
        return model(data)
"""

# Warm-up succeeds; every inference after it fails as a GPU with a sticky CUDA error does.
FAILING_INFERENCE_PY = """
    def predict_fn(data, model, context):
        if context.request_id != "warm-up":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return model(data)
"""


def wait_for(condition, what: str, deadline_s: float = DEADLINE_S) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < deadline_s, f"not {what} after {deadline_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


def test_ping_fails_while_the_only_copy_is_hung_and_recovers_when_it_returns(
    start_server, torchvision_model_dir, tmp_path, records
):
    model_dir = artifact_with_code(torchvision_model_dir, tmp_path, HANGING_INFERENCE_PY)
    server = start_server(model_dir, {"TEST_RECORD_DIR": str(records), "REQUEST_TIMEOUT_S": "8"})
    (records / "hold").touch()
    photo = PHOTO.read_bytes()

    hung = server.invoke(photo, "image/jpeg")
    assert hung.status_code == 503 and error_of(hung)["code"] == "request_timed_out"
    assert (records / "predicting").exists()

    wait_for(lambda: server.ping().status_code == 503, "failing /ping")
    ping = server.ping()
    assert error_of(ping)["code"] == "model_unhealthy"
    assert (
        "0 of 1 model copies can serve; model copy 1 (cpu): one inference has run for"
        in (error_of(ping)["message"])
    )
    refused = server.invoke(photo, "image/jpeg")
    assert refused.status_code == 503 and error_of(refused)["code"] == "model_unhealthy"
    assert "no model copy can serve" in error_of(refused)["message"]

    (records / "hold").unlink()
    wait_for(lambda: server.ping().status_code == 200, "/ping 200 again")
    assert server.invoke(photo, "image/jpeg").status_code == 200
    assert "model copy 1 (cpu) counts as hung" in server.log()
    assert "the inference that counted as hung ended" in server.log()


def test_ping_fails_after_consecutive_internal_errors_and_requests_are_refused_at_once(
    start_server, torchvision_model_dir, tmp_path
):
    model_dir = artifact_with_code(torchvision_model_dir, tmp_path, FAILING_INFERENCE_PY)
    server = start_server(model_dir, {"UNHEALTHY_AFTER_ERRORS": "3"})
    photo = PHOTO.read_bytes()

    statuses = []
    while server.ping().status_code == 200:
        assert len(statuses) < 20, statuses
        statuses.append(server.invoke(photo, "image/jpeg").status_code)
    assert statuses == [500, 500, 500]
    ping = server.ping()
    assert error_of(ping)["code"] == "model_unhealthy"
    assert (
        "its last 3 inferences failed (UNHEALTHY_AFTER_ERRORS=3), the last with RuntimeError: CUDA error"
        in (error_of(ping)["message"])
    )
    refused = server.invoke(photo, "image/jpeg")
    assert refused.status_code == 503 and error_of(refused)["code"] == "model_unhealthy"
    assert "model copy 1 (cpu) is out of service" in server.log()


def test_the_default_takes_a_failing_copy_out_within_twenty_requests(
    start_server, torchvision_model_dir, tmp_path
):
    model_dir = artifact_with_code(torchvision_model_dir, tmp_path, FAILING_INFERENCE_PY)
    server = start_server(model_dir)
    photo = PHOTO.read_bytes()
    sent = 0
    while server.ping().status_code == 200:
        assert sent < 20
        assert server.invoke(photo, "image/jpeg").status_code == 500
        sent += 1
    assert sent == 5  # DEFAULT_UNHEALTHY_AFTER_ERRORS
    with pytest.raises(requests.HTTPError, match="503"):
        server.invoke(photo, "image/jpeg").raise_for_status()
