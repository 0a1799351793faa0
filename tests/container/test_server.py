"""The HTTP contract of the real server process serving a real torchvision artifact (real-time mode):
content types, orientation, colour modes, options, error statuses.

One server is shared by the module: every test here leaves it as it found it. That the served
numbers equal the libraries' own predictors is test_parity.py's subject.
"""

from __future__ import annotations

import hashlib
import io
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from .artifacts import TEST_IMAGES
from .image_files import image_bytes, json_body, npy_bytes, upright_rgb

INPUT_PHOTO = next(path for path in TEST_IMAGES if path.name == "input.jpg")


@pytest.fixture(scope="module")
def server(realtime_server):
    return realtime_server


@pytest.fixture(scope="module")
def served(server):
    """Serve a body once per module: the same request gives the same bytes (the parallel-clients
    test in test_server_lifecycle.py shows it), and each inference costs seconds on a 2-core CPU."""
    documents: dict[tuple, dict] = {}

    def serve(body: bytes, content_type: str, custom_attributes: str | None = None) -> dict:
        key = (hashlib.sha256(body).digest(), content_type, custom_attributes)
        if key not in documents:
            headers = {"X-Amzn-SageMaker-Custom-Attributes": custom_attributes} if custom_attributes else {}
            documents[key] = invoke_ok(server, body, content_type, headers)
        return documents[key]

    return serve


def invoke_ok(server, body: bytes, content_type: str, headers=None) -> dict:
    response = server.invoke(body, content_type, headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_ping_is_200_with_an_empty_body(server):
    response = server.ping()
    assert (response.status_code, response.content) == (200, b"")


def test_every_content_type_serves_the_same_result(served):
    rgb = upright_rgb(INPUT_PHOTO)
    png = image_bytes(rgb)
    reference = served(png, "image/png")
    assert reference["instances"]
    assert served(png, "application/x-image") == reference
    assert served(npy_bytes(rgb), "application/x-npy") == reference
    assert served(json_body(png), "application/json") == reference
    jpeg = INPUT_PHOTO.read_bytes()
    assert served(jpeg, "application/x-image; charset=binary") == served(jpeg, "image/jpeg")


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_copy_serves_the_upright_result(served, orientation):
    upright = upright_rgb(INPUT_PHOTO)
    rotated_file = image_bytes(upright, orientation=orientation)
    assert Image.open(io.BytesIO(rotated_file)).size == upright.shape[:2]  # stored turned: width <-> height
    assert served(rotated_file, "image/png") == served(image_bytes(upright), "image/png")


def test_grayscale_and_alpha_images(served):
    rgb = upright_rgb(INPUT_PHOTO)
    gray = np.array(Image.fromarray(rgb).convert("L"))
    as_gray = served(image_bytes(Image.fromarray(gray, "L")), "image/png")
    assert as_gray["instances"]
    assert as_gray == served(image_bytes(np.repeat(gray[:, :, None], 3, axis=2)), "image/png")
    rgba = Image.fromarray(np.dstack([rgb, np.full(gray.shape, 128, np.uint8)]), "RGBA")
    assert served(image_bytes(rgba), "image/png") == served(image_bytes(rgb), "image/png")


def test_per_request_options(served):
    jpeg = INPUT_PHOTO.read_bytes()
    everything = served(jpeg, "image/jpeg")["instances"]
    assert len(everything) >= 3
    threshold = everything[2]["score"]

    def with_options(value: str) -> list[dict]:
        return served(jpeg, "image/jpeg", value)["instances"]

    assert with_options(f"score_threshold={threshold!r}") == everything[:3]
    assert with_options("max_detections=1") == everything[:1]
    assert with_options("mask_format=none") == [
        {k: v for k, v in i.items() if k != "mask"} for i in everything
    ]
    polygons = with_options("mask_format=polygon,max_detections=2")
    assert [set(i) for i in polygons] == [{"class_id", "class_name", "score", "box", "polygons"}] * 2
    for instance in polygons:
        x1, y1, x2, y2 = instance["box"]
        for polygon in instance["polygons"]:
            assert len(polygon) % 2 == 0 and len(polygon) >= 6
            assert x1 - 1 <= min(polygon[0::2]) and max(polygon[0::2]) <= x2 + 1
            assert y1 - 1 <= min(polygon[1::2]) and max(polygon[1::2]) <= y2 + 1


def assert_error(response: requests.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], message in error["message"]) == (code, True), error
    assert error["request_id"] == response.headers["x-request-id"] and len(error["request_id"]) == 32


def test_every_client_error_status_and_the_server_keeps_serving(server):
    jpeg = INPUT_PHOTO.read_bytes()
    assert_error(server.invoke(b"\xff\xd8garbage", "image/jpeg"), 400, "invalid_input", "not a JPEG image")
    assert_error(
        server.invoke(b"{}", "application/json"),
        400,
        "invalid_input",
        '{"image": "<base64-encoded image file>"}',
    )
    assert_error(
        server.invoke(jpeg, "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "score_threshold=2"}),
        400,
        "invalid_option",
        "score_threshold='2' is invalid; allowed: a number in 0..1",
    )
    assert_error(
        server.invoke(jpeg, "image/jpeg", {"Accept": "text/csv"}), 406, "not_acceptable", "Accept 'text/csv'"
    )
    assert_error(
        server.invoke(jpeg, "image/gif"), 415, "unsupported_media_type", "'image/gif' is not supported"
    )
    assert_error(server.invoke(jpeg, ""), 415, "unsupported_media_type", "use one of: image/jpeg")
    too_big = b"\0" * (6 * 1024 * 1024 + 1)
    assert_error(server.invoke(too_big, "image/jpeg"), 413, "payload_too_large", "exceeds 6291456 bytes")
    # Without a Content-Length (chunked), the bytes actually received are counted.
    chunked = requests.post(
        f"{server.url}/invocations",
        data=iter([too_big[:4_000_000], too_big[4_000_000:]]),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert "content-length" not in chunked.request.headers
    assert_error(chunked, 413, "payload_too_large", "the limit in realtime mode")
    assert_error(
        requests.get(f"{server.url}/invocations", timeout=5), 405, "method_not_allowed", "GET /invocations"
    )
    assert server.ping().status_code == 200
    assert invoke_ok(server, jpeg, "image/jpeg", {"Accept": "application/json"})["instances"]


def test_execution_parameters(server):
    response = requests.get(f"{server.url}/execution-parameters", timeout=5)
    assert response.json() == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 6,
    }


def test_ping_answers_promptly_while_inferences_run(server):
    # Contract check (SageMaker allows 2 s per ping), not a benchmark: the event loop never runs the model.
    jpeg = INPUT_PHOTO.read_bytes()
    with ThreadPoolExecutor(max_workers=2) as clients:
        inferences = [clients.submit(server.invoke, jpeg, "image/jpeg") for _ in range(2)]
        durations = []
        while not all(f.done() for f in inferences):
            started = time.perf_counter()
            assert server.ping().status_code == 200
            durations.append(time.perf_counter() - started)
            time.sleep(0.1)
        assert [f.result().status_code for f in inferences] == [200] * 2
    # SageMaker's own limit, not a speed target: a loaded CI machine slows every ping, yet a ping
    # stuck behind an inference (seconds on a CPU) would still exceed it.
    assert durations and max(durations) < 2.0, durations


def test_a_client_that_disconnects_mid_body_is_not_an_internal_error(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as client:
        client.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"\xff\xd8" * 100
        )
    deadline = time.monotonic() + 10
    while "client disconnected before sending its whole body" not in server.log():
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.1)
    assert "internal error" not in server.log()
    assert server.ping().status_code == 200
