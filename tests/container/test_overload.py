"""Overload and model copies over real HTTP, on the real server process with a real torchvision model:
refusal at admission, requests dropped before they reach the model, /ping under load, two copies
serving in parallel from one queue, and a copy that fails to load.

Timing is set by the instrumented code/inference.py, never measured: its warm-up takes a set time
(the server's first estimate of one inference) and a file holds predictions until the test removes
it, so "at once" means "answered while the model was still held", not "within N ms".
"""

from __future__ import annotations

import contextlib
import re
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import requests
import torch

from .artifacts import torchvision_reference
from .image_files import upright_rgb
from .test_parity import assert_response_matches
from .test_server_lifecycle import (
    INPUT_PHOTO,
    INSTRUMENTED_INFERENCE_PY,
    Instrumented,
    artifact_with_code,
    error_of,
)

WAIT_S = 120  # the longest a test waits for the server to reach a state; never a speed assertion


@pytest.fixture(scope="module")
def instrumented_model_dir(torchvision_model_dir, tmp_path_factory) -> Path:
    return artifact_with_code(
        torchvision_model_dir, tmp_path_factory.mktemp("instrumented"), INSTRUMENTED_INFERENCE_PY
    )


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def request_id(response: requests.Response) -> str:
    return response.headers["X-Request-Id"]


def test_overload_is_refused_at_once_and_late_requests_never_reach_the_model(
    start_server, instrumented_model_dir, tmp_path
):
    # GIVEN one copy whose inference the server estimates at 4 s, and a 10 s limit per request
    held = Instrumented(
        start_server,
        instrumented_model_dir,
        tmp_path / "records",
        hold_load=False,
        env={"REQUEST_TIMEOUT_S": "10"},
        warm_up_s=4,
    )
    held.server.wait_until_ready()
    (held.records / "predicting").unlink()  # touched by the warm-up
    (held.records / "hold-predict").touch()
    jpeg = INPUT_PHOTO.read_bytes()
    with ThreadPoolExecutor(max_workers=4) as clients:
        # WHEN one request runs (held) and two more arrive: one fits behind it (starts at ~4 s, ends
        # at ~8 s), the other would end at ~12 s
        running = clients.submit(held.server.invoke, jpeg, "image/jpeg")
        wait_for((held.records / "predicting").exists, "the first request to reach predict_fn")
        second, third = (clients.submit(held.server.invoke, jpeg, "image/jpeg") for _ in range(2))
        done, _ = wait([second, third], return_when=FIRST_COMPLETED)
        first = done.pop()
        refused, queued = first.result(), (third if first is second else second)
        # THEN the third is refused while the model is still held: 503, JSON, Retry-After
        assert not queued.done()
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/json"
        error = error_of(refused)
        assert error["code"] == "overloaded" and "REQUEST_TIMEOUT_S" in error["message"]
        assert int(refused.headers["Retry-After"]) == error["retry_after_s"] >= 1
        # /ping keeps answering 200 while the model is busy and requests wait
        assert held.server.ping().status_code == 200

        # WHEN the held inference ends with ~3 s left of the second request's 10 s, less than one
        # inference takes
        time.sleep(7)
        (held.records / "hold-predict").unlink()
        late = queued.result()
        running.result()

    # THEN the second request is answered 503 and was never computed
    assert late.status_code == 503 and error_of(late)["code"] == "request_timed_out", late.text
    reached_the_model = held.lines("requests")
    assert request_id(late) not in reached_the_model and request_id(refused) not in reached_the_model
    assert f"request {request_id(late)}: " in held.server.log()
    assert "never computed (1 dropped so far)" in held.server.log()
    # ... and once the held inference has run to its end (an inference cannot be stopped), the idle
    # server takes the next request to the model again (whether a loaded machine finishes it within
    # the 10 s is not this test's business)
    wait_for(lambda: len(held.lines("finished")) == 2, "the warm-up and the first request to finish")
    after = held.server.invoke(jpeg, "image/jpeg")
    assert request_id(after) in held.lines("requests"), after.text


def test_requests_past_their_timeout_get_503_and_queued_ones_never_run(
    start_server, instrumented_model_dir, tmp_path
):
    # Async mode: no refusal at admission, only the (here short) request timeout.
    env = {"REQUEST_TIMEOUT_S": "2", "INFERENCE_MODE": "async"}
    held = Instrumented(start_server, instrumented_model_dir, tmp_path / "records", hold_load=False, env=env)
    held.server.wait_until_ready()
    predictions_at_start = len(held.lines("running"))  # the warm-up's
    (held.records / "predicting").unlink()  # touched by the warm-up
    (held.records / "hold-predict").touch()
    jpeg = INPUT_PHOTO.read_bytes()
    with ThreadPoolExecutor(max_workers=2) as clients:
        running = clients.submit(held.server.invoke, jpeg, "image/jpeg")
        # The second request must find the first in predict_fn, however slowly a loaded machine
        # got it there (a fixed sleep let them arrive in either order).
        wait_for((held.records / "predicting").exists, "the first request to reach predict_fn")
        queued = clients.submit(held.server.invoke, jpeg, "image/jpeg")
        for response in (running.result(), queued.result()):
            assert response.status_code == 503
            assert error_of(response)["code"] == "request_timed_out"
            assert "over 2 s (REQUEST_TIMEOUT_S)" in error_of(response)["message"]
    (held.records / "hold-predict").unlink()
    wait_for(lambda: len(held.lines("finished")) >= predictions_at_start + 1, "the held prediction to end")
    time.sleep(1)
    # The held request ran to its end (a running inference cannot be stopped); the queued one was
    # dropped before it reached predict_fn, and the server still serves.
    assert len(held.lines("running")) == predictions_at_start + 1
    assert request_id(queued.result()) not in held.lines("requests")
    assert "deadline passed while queued; removed from the queue, never computed" in held.server.log()
    assert held.server.ping().status_code == 200


def test_two_copies_serve_one_queue_in_parallel_with_the_single_copy_answers(
    start_server, instrumented_model_dir, torchvision_model_dir, tmp_path
):
    held = Instrumented(
        start_server,
        instrumented_model_dir,
        tmp_path / "records",
        hold_load=False,
        env={"MODEL_COPIES": "2", "REQUEST_TIMEOUT_S": "3600"},
    )
    held.server.wait_until_ready()
    # Both copies were loaded and warmed up (in the server process itself) before /ping said 200.
    assert held.lines("loads") == [str(held.server.process.pid)] * 2
    assert "2 copies (cpu, cpu)" in held.server.log()
    parameters = requests.get(f"{held.server.url}/execution-parameters", timeout=5).json()
    assert parameters["MaxConcurrentTransforms"] == 2

    warm_ups = len(held.lines("running"))  # the two copies warm up at the same time
    (held.records / "hold-predict").touch()
    jpeg = INPUT_PHOTO.read_bytes()
    with ThreadPoolExecutor(max_workers=4) as clients:
        responses = [clients.submit(held.server.invoke, jpeg, "image/jpeg") for _ in range(4)]
        # Both copies inside predict_fn at the same moment.
        wait_for(lambda: "2" in held.lines("running")[warm_ups:], "two predictions at once")
        assert held.server.ping().status_code == 200
        (held.records / "hold-predict").unlink()
        answers = [response.result() for response in responses]

    assert [answer.status_code for answer in answers] == [200] * 4
    assert len({answer.content for answer in answers}) == 1
    rgb = upright_rgb(INPUT_PHOTO)
    assert_response_matches(
        answers[0].json(), torchvision_reference(torchvision_model_dir)(rgb), rgb.shape[:2]
    )


def test_a_copy_that_fails_to_load_stops_the_start_with_one_line_naming_its_device(
    start_server, instrumented_model_dir, tmp_path
):
    held = Instrumented(
        start_server,
        instrumented_model_dir,
        tmp_path / "records",
        hold_load=False,
        env={"MODEL_COPIES": "2"},
        fail_second_load=True,
    )
    statuses = set()
    while held.server.process.poll() is None:
        with contextlib.suppress(requests.ConnectionError):
            statuses.add(held.server.ping(timeout=5).status_code)
        time.sleep(0.05)
    assert held.server.process.returncode == 1
    assert 200 not in statuses  # never reported healthy half-loaded
    failure_lines = [line for line in held.server.log().splitlines() if "failed to load" in line]
    assert len(failure_lines) == 1
    assert re.search(
        r"model failed to load from .*: model copy [12] \(cpu\) of 2 failed to load: "
        r"RuntimeError: CUDA out of memory\. Tried to allocate 2\.00 GiB \(simulated\); stopping$",
        failure_lines[0],
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: one model copy per GPU and autocast")
def test_gpu_copies_and_mixed_precision(start_server, torchvision_model_dir):
    server = start_server(torchvision_model_dir, {"MIXED_PRECISION": "fp16"})
    gpus = torch.cuda.device_count()
    assert f"{gpus} cop{'y' if gpus == 1 else 'ies'} ({', '.join(f'cuda:{i}' for i in range(gpus))})" in (
        server.log()
    )
    response = server.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg")
    assert response.status_code == 200 and response.json()["instances"]
    assert all(isinstance(value, float) for value in response.json()["instances"][0]["box"])
