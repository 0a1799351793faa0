"""Malformed and hostile requests against the real server process (real-time mode, torchvision
artifact): each gets a 4xx answer naming the problem, none a 5xx, and afterwards the same process
still answers a valid photo with the same bytes as before the table.

A few requests are not HTTP that the server can parse (a Content-Length that is not a number, a bad
chunk size, a garbage request line); uvicorn answers those with its own plain-text 400 before the
application sees them (`code` None below).
"""

from __future__ import annotations

import io
import json
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import requests

from .artifacts import TEST_IMAGES
from .conftest import RunningServer
from .image_files import image_bytes, json_body, noise_image, npy_bytes

INPUT_PHOTO = next(path for path in TEST_IMAGES if path.name == "input.jpg")
REALTIME_LIMIT = 6 * 1024 * 1024
# The server waits this long for a body that stops arriving (app.BODY_IDLE_TIMEOUT_S), plus slack.
BODY_IDLE_WAIT_S = 10 + 20


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Hostile:
    name: str
    send: Callable[[RunningServer], Answer]
    status: int
    code: str | None  # None: answered by uvicorn's HTTP parser, before the application
    message: str = ""

    def __str__(self) -> str:
        return self.name


# --- ways to send ------------------------------------------------------------------------------------


def post(body: bytes, content_type: str | None, **headers: str) -> Callable[[RunningServer], Answer]:
    return request("POST", "/invocations", body, content_type, **headers)


def request(
    method: str, path: str, body: bytes = b"", content_type: str | None = None, **headers: str
) -> Callable[[RunningServer], Answer]:
    def send(server: RunningServer) -> Answer:
        all_headers = {name.replace("_", "-"): value for name, value in headers.items()}
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        response = requests.request(method, f"{server.url}{path}", data=body, headers=all_headers, timeout=60)
        return Answer(
            response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
        )

    return send


def chunked(body: bytes, content_type: str) -> Callable[[RunningServer], Answer]:
    """No Content-Length: requests sends an iterator with Transfer-Encoding: chunked."""

    def send(server: RunningServer) -> Answer:
        pieces = iter([body[: len(body) // 2], body[len(body) // 2 :]])
        response = requests.post(
            f"{server.url}/invocations", data=pieces, headers={"Content-Type": content_type}, timeout=60
        )
        assert "content-length" not in response.request.headers
        return Answer(
            response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
        )

    return send


def raw(data: bytes, wait_s: float = 30) -> Callable[[RunningServer], Answer]:
    """Bytes written straight to the socket; the first response read back."""

    def send(server: RunningServer) -> Answer:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=wait_s) as connection:
            connection.sendall(data)
            return read_response(connection)

    return send


def read_response(connection: socket.socket) -> Answer:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed without a response: {received!r}"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    headers = {name.lower(): value for name, value in headers.items()}
    # With a Content-Length, read that much; without one (uvicorn's own errors), read to the close.
    size = int(headers["content-length"]) if "content-length" in headers else None
    while size is None or len(body) < size:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def http_request(content_type: str, body: bytes, **headers: str) -> bytes:
    lines = [b"POST /invocations HTTP/1.1", b"Host: test", f"Content-Type: {content_type}".encode()]
    lines += [f"{name.replace('_', '-')}: {value}".encode() for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# --- hostile files -----------------------------------------------------------------------------------

NOISE = noise_image()
JPEG = image_bytes(NOISE, "JPEG", quality=90)
PNG = image_bytes(NOISE)
WEBP = image_bytes(NOISE, "WEBP")
BMP = image_bytes(NOISE, "BMP")
GIF = image_bytes(NOISE, "GIF")
TIFF = image_bytes(NOISE, "TIFF")
NPY = npy_bytes(NOISE)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares another size (CRC fixed, so only the size is wrong)."""
    ihdr_data = struct.pack(">II", width, height) + PNG[24:29]
    return PNG[:8] + png_chunk(b"IHDR", ihdr_data) + PNG[33:]


def png_with_text_bomb() -> bytes:
    """A small PNG carrying a zTXt chunk that inflates to 64 MiB."""
    bomb = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * (64 * 1024 * 1024), 9))
    return PNG[:33] + bomb + PNG[33:]


def jpeg_with_size(width: int, height: int) -> bytes:
    frame = JPEG.index(b"\xff\xc0")  # baseline SOF0: length, precision, then height and width
    return JPEG[: frame + 5] + struct.pack(">HH", height, width) + JPEG[frame + 9 :]


def webp_with_size(width: int, height: int) -> bytes:
    frame = WEBP.index(b"\x9d\x01\x2a") + 3  # VP8 start code, then 14-bit width and height
    return WEBP[:frame] + struct.pack("<HH", width, height) + WEBP[frame + 4 :]


def bmp_with_size(width: int, height: int) -> bytes:
    return BMP[:18] + struct.pack("<ii", width, height) + BMP[26:]


def garbage(prefix: bytes, size: int = 4000, seed: int = 0) -> bytes:
    return prefix + np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def thin_png(width: int, height: int) -> bytes:
    return image_bytes(np.zeros((height, width, 3), np.uint8))


NESTED_LISTS = b"[" * 100_000 + b"]" * 100_000
NESTED_OBJECTS = b'{"image":' * 100_000 + b'""' + b"}" * 100_000
OVER_LIMIT = b"\0" * (REALTIME_LIMIT + 1)
CORRUPT = "image data is corrupt or truncated"
NOT_AN_IMAGE = "body is not a JPEG or PNG or WEBP or BMP image"
TOO_LARGE = "image is too large to decode"
NPY_SHAPE = "a .npy image must be HWC uint8 with 3 (RGB) channels"
CONTENT_TYPES = "use one of: image/jpeg, image/png, application/x-image, application/x-npy, application/json"

CASES = [
    # Truncated and garbage images of each type.
    Hostile("jpeg-truncated", post(JPEG[: len(JPEG) // 2], "image/jpeg"), 400, "invalid_input", CORRUPT),
    Hostile("jpeg-header-only", post(JPEG[:200], "image/jpeg"), 400, "invalid_input", CORRUPT),
    Hostile("jpeg-garbage", post(garbage(b"\xff\xd8\xff\xe0"), "image/jpeg"), 400, "invalid_input", CORRUPT),
    Hostile("png-truncated", post(PNG[: len(PNG) // 2], "image/png"), 400, "invalid_input", CORRUPT),
    Hostile("png-garbage", post(garbage(PNG[:8]), "image/png"), 400, "invalid_input", "PNG"),
    Hostile(
        "webp-truncated", post(WEBP[: len(WEBP) // 2], "application/x-image"), 400, "invalid_input", CORRUPT
    ),
    Hostile("webp-garbage", post(garbage(WEBP[:16]), "application/x-image"), 400, "invalid_input", CORRUPT),
    Hostile(
        "bmp-truncated", post(BMP[: len(BMP) // 2], "application/x-image"), 400, "invalid_input", CORRUPT
    ),
    Hostile("bmp-garbage", post(garbage(b"BM"), "application/x-image"), 400, "invalid_input", CORRUPT),
    Hostile("random-bytes", post(garbage(b""), "application/x-image"), 400, "invalid_input", NOT_AN_IMAGE),
    Hostile("gif-refused", post(GIF, "application/x-image"), 400, "invalid_input", NOT_AN_IMAGE),
    Hostile("tiff-refused", post(TIFF, "application/x-image"), 400, "invalid_input", NOT_AN_IMAGE),
    Hostile("png-sent-as-jpeg", post(PNG, "image/jpeg"), 400, "invalid_input", "body is not a JPEG image"),
    Hostile("jpeg-sent-as-png", post(JPEG, "image/png"), 400, "invalid_input", "body is not a PNG image"),
    # Decompression bombs: the header declares the size; nothing is decoded.
    Hostile(
        "png-bomb-header",
        post(png_with_size(100_000, 100_000), "image/png"),
        413,
        "image_too_large",
        TOO_LARGE,
    ),
    Hostile(
        "png-bomb-over-max-pixels",
        post(png_with_size(9000, 9000), "image/png"),
        413,
        "image_too_large",
        "9000x9000 = 81000000 pixels; the limit is 67108864 (MAX_IMAGE_PIXELS)",
    ),
    Hostile(
        "jpeg-bomb-header",
        post(jpeg_with_size(65_000, 65_000), "image/jpeg"),
        413,
        "image_too_large",
        TOO_LARGE,
    ),
    Hostile(
        "jpeg-bomb-over-max-pixels",
        post(jpeg_with_size(9000, 9000), "image/jpeg"),
        413,
        "image_too_large",
        "9000x9000 = 81000000 pixels",
    ),
    Hostile(
        "webp-bomb-header",
        post(webp_with_size(16383, 16383), "application/x-image"),
        413,
        "image_too_large",
        TOO_LARGE,
    ),
    Hostile(
        "bmp-bomb-header",
        post(bmp_with_size(100_000, 100_000), "application/x-image"),
        413,
        "image_too_large",
        TOO_LARGE,
    ),
    Hostile("png-text-chunk-bomb", post(png_with_text_bomb(), "image/png"), 400, "invalid_input", CORRUPT),
    Hostile(
        "png-zero-width",
        post(png_with_size(0, 48), "image/png"),
        400,
        "invalid_input",
        "body is not a PNG image",
    ),
    Hostile(
        "png-thin-strip", post(thin_png(5000, 2), "image/png"), 400, "invalid_input", "at most 100 times"
    ),
    # Zero-byte bodies.
    Hostile("empty-jpeg", post(b"", "image/jpeg"), 400, "invalid_input", "body is not a JPEG image"),
    Hostile("empty-png", post(b"", "image/png"), 400, "invalid_input", "body is not a PNG image"),
    Hostile("empty-x-image", post(b"", "application/x-image"), 400, "invalid_input", NOT_AN_IMAGE),
    Hostile("empty-npy", post(b"", "application/x-npy"), 400, "invalid_input", "body is not a .npy array"),
    Hostile("empty-json", post(b"", "application/json"), 400, "invalid_input", "body is not valid JSON"),
    # Content types.
    Hostile("no-content-type", post(JPEG, None), 415, "unsupported_media_type", CONTENT_TYPES),
    Hostile(
        "text-plain", post(JPEG, "text/plain"), 415, "unsupported_media_type", "'text/plain' is not supported"
    ),
    Hostile(
        "image-gif", post(GIF, "image/gif"), 415, "unsupported_media_type", "'image/gif' is not supported"
    ),
    Hostile(
        "multipart",
        post(JPEG, "multipart/form-data; boundary=x"),
        415,
        "unsupported_media_type",
        "is not supported",
    ),
    Hostile(
        "content-type-garbage", post(JPEG, ";;;"), 415, "unsupported_media_type", "';;;' is not supported"
    ),
    # JSON and base64.
    Hostile(
        "json-nested-lists-100k", post(NESTED_LISTS, "application/json"), 400, "invalid_input", "nesting"
    ),
    Hostile(
        "json-nested-objects-100k", post(NESTED_OBJECTS, "application/json"), 400, "invalid_input", "nesting"
    ),
    Hostile(
        "json-huge-integer",
        post(b'{"image": ' + b"9" * 5000 + b"}", "application/json"),
        400,
        "invalid_input",
        "JSON",
    ),
    Hostile(
        "json-not-utf8", post(b'{"image": "\xff\xfe"}', "application/json"), 400, "invalid_input", "JSON"
    ),
    Hostile("json-top-level-list", post(b"[1, 2]", "application/json"), 400, "invalid_input", '{"image"'),
    Hostile(
        "json-image-not-a-string",
        post(b'{"image": 12}', "application/json"),
        400,
        "invalid_input",
        '{"image"',
    ),
    Hostile(
        "base64-bad-characters",
        post(b'{"image": "!!!!"}', "application/json"),
        400,
        "invalid_input",
        "base64",
    ),
    Hostile(
        "base64-bad-padding", post(b'{"image": "AAAAA"}', "application/json"), 400, "invalid_input", "base64"
    ),
    Hostile(
        "base64-of-garbage",
        post(json_body(garbage(b"")), "application/json"),
        400,
        "invalid_input",
        NOT_AN_IMAGE,
    ),
    Hostile(
        "base64-of-a-bomb",
        post(json_body(png_with_size(100_000, 100_000)), "application/json"),
        413,
        "image_too_large",
        TOO_LARGE,
    ),
    # .npy arrays.
    Hostile(
        "npy-zero-rows",
        post(npy_bytes(np.zeros((0, 10, 3), np.uint8)), "application/x-npy"),
        400,
        "invalid_input",
        "no pixels",
    ),
    Hostile(
        "npy-zero-columns",
        post(npy_bytes(np.zeros((10, 0, 3), np.uint8)), "application/x-npy"),
        400,
        "invalid_input",
        "no pixels",
    ),
    Hostile(
        "npy-pickled-objects",
        post(npy_bytes(np.full((2, 2, 3), None, dtype=object), allow_pickle=True), "application/x-npy"),
        400,
        "invalid_input",
        "dtype object",
    ),
    Hostile(
        "npy-float32",
        post(npy_bytes(NOISE.astype(np.float32)), "application/x-npy"),
        400,
        "invalid_input",
        "dtype float32",
    ),
    Hostile(
        "npy-uint16",
        post(npy_bytes(NOISE.astype(np.uint16)), "application/x-npy"),
        400,
        "invalid_input",
        "dtype uint16",
    ),
    Hostile(
        "npy-rank-2", post(npy_bytes(NOISE[:, :, 0]), "application/x-npy"), 400, "invalid_input", NPY_SHAPE
    ),
    Hostile("npy-rank-4", post(npy_bytes(NOISE[None]), "application/x-npy"), 400, "invalid_input", NPY_SHAPE),
    Hostile(
        "npy-four-channels",
        post(npy_bytes(np.dstack([NOISE, NOISE[:, :, :1]])), "application/x-npy"),
        400,
        "invalid_input",
        NPY_SHAPE,
    ),
    Hostile(
        "npy-one-channel",
        post(npy_bytes(NOISE[:, :, :1]), "application/x-npy"),
        400,
        "invalid_input",
        NPY_SHAPE,
    ),
    Hostile(
        "npy-bomb-header",
        post(npy_header((100_000, 100_000, 3)), "application/x-npy"),
        413,
        "image_too_large",
        "100000x100000",
    ),
    Hostile(
        "npy-negative-shape",
        post(npy_header((-4, 10, 3)), "application/x-npy"),
        400,
        "invalid_input",
        "no pixels",
    ),
    Hostile(
        "npy-header-promises-more",
        post(npy_header((48, 64, 3)) + b"\0" * 100, "application/x-npy"),
        400,
        "invalid_input",
        "not a readable .npy",
    ),
    Hostile(
        "npy-header-garbage",
        post(NPY[:10] + b"{'descr': ((((", "application/x-npy"),
        400,
        "invalid_input",
        "not a .npy array",
    ),
    Hostile(
        "npy-structured-dtype",
        post(npy_header((4, 4, 3), descr="<u2"), "application/x-npy"),
        400,
        "invalid_input",
        NPY_SHAPE,
    ),
    # Per-request options and Accept.
    Hostile(
        "attribute-unknown",
        post(JPEG, "image/jpeg", X_Amzn_SageMaker_Custom_Attributes="treshold=0.5"),
        400,
        "invalid_option",
        "'treshold=0.5' is not supported",
    ),
    Hostile(
        "attribute-nan",
        post(JPEG, "image/jpeg", X_Amzn_SageMaker_Custom_Attributes="score_threshold=nan"),
        400,
        "invalid_option",
        "score_threshold='nan' is invalid",
    ),
    Hostile(
        "attribute-negative-count",
        post(JPEG, "image/jpeg", X_Amzn_SageMaker_Custom_Attributes="max_detections=-1"),
        400,
        "invalid_option",
        "max_detections='-1' is invalid",
    ),
    Hostile(
        "attribute-twice",
        post(JPEG, "image/jpeg", X_Amzn_SageMaker_Custom_Attributes="mask_format=rle,mask_format=rle"),
        400,
        "invalid_option",
        "given more than once",
    ),
    Hostile(
        "attribute-without-value",
        post(JPEG, "image/jpeg", X_Amzn_SageMaker_Custom_Attributes="=5"),
        400,
        "invalid_option",
        "is not supported",
    ),
    Hostile(
        "accept-csv", post(JPEG, "image/jpeg", Accept="text/csv"), 406, "not_acceptable", "Accept 'text/csv'"
    ),
    Hostile(
        "accept-image",
        post(JPEG, "image/jpeg", Accept="image/png"),
        406,
        "not_acceptable",
        "application/json",
    ),
    Hostile(
        "accept-garbage", post(JPEG, "image/jpeg", Accept="////"), 406, "not_acceptable", "Accept '////'"
    ),
    # Sizes and lying framing.
    Hostile("over-limit", post(OVER_LIMIT, "image/jpeg"), 413, "payload_too_large", "exceeds 6291456 bytes"),
    Hostile(
        "over-limit-chunked", chunked(OVER_LIMIT, "image/jpeg"), 413, "payload_too_large", "realtime mode"
    ),
    Hostile(
        "content-length-larger-than-body",
        raw(http_request("image/jpeg", JPEG[:100], Content_Length=str(len(JPEG))), wait_s=BODY_IDLE_WAIT_S),
        408,
        "body_incomplete",
        f"after 100 bytes of the {len(JPEG)} bytes its Content-Length declares",
    ),
    Hostile(
        "content-length-smaller-than-body",
        raw(http_request("image/jpeg", JPEG, Content_Length="300")),
        400,
        "invalid_input",
        CORRUPT,
    ),
    Hostile(
        "content-length-over-limit-no-body",
        raw(http_request("image/jpeg", b"", Content_Length=str(2**40))),
        413,
        "payload_too_large",
        "exceeds 6291456 bytes",
    ),
    Hostile(
        "content-length-not-a-number", raw(http_request("image/jpeg", JPEG, Content_Length="abc")), 400, None
    ),
    Hostile(
        "chunk-size-not-hex",
        raw(http_request("image/jpeg", b"zz\r\nabc\r\n", Transfer_Encoding="chunked")),
        400,
        None,
    ),
    Hostile("request-line-garbage", raw(b"\x16\x03\x01 not http\r\n\r\n"), 400, None),
    # Routes and methods.
    Hostile("get-invocations", request("GET", "/invocations"), 405, "method_not_allowed", "GET /invocations"),
    Hostile(
        "put-invocations",
        request("PUT", "/invocations", JPEG, "image/jpeg"),
        405,
        "method_not_allowed",
        "PUT /invocations",
    ),
    Hostile(
        "delete-invocations",
        request("DELETE", "/invocations"),
        405,
        "method_not_allowed",
        "DELETE /invocations",
    ),
    Hostile(
        "post-ping", request("POST", "/ping", JPEG, "image/jpeg"), 405, "method_not_allowed", "POST /ping"
    ),
    Hostile("unknown-route", request("GET", "/predict"), 404, "not_found", "GET /predict"),
    Hostile(
        "invocations-subpath",
        request("POST", "/invocations/x", JPEG, "image/jpeg"),
        404,
        "not_found",
        "POST /invocations/x",
    ),
    Hostile("path-traversal", request("GET", "/../../etc/passwd"), 404, "not_found", "Not Found"),
]


@pytest.fixture(scope="module")
def server(realtime_server):
    return realtime_server


@pytest.fixture(scope="module")
def photo_answer_before(server) -> bytes:
    """The valid photo's answer before any hostile request: the same bytes must come back after."""
    response = server.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg")
    assert response.status_code == 200, response.text
    return response.content


def test_the_table_covers_every_kind_of_malformed_input():
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_malformed_input_gets_a_4xx_naming_the_problem(case, server, photo_answer_before):
    answer = case.send(server)

    assert answer.status == case.status, answer.body[:500]
    if case.code is None:
        assert b"Invalid HTTP request" in answer.body  # uvicorn's text, whatever its framing
        return
    assert answer.headers["content-type"] == "application/json"
    error = json.loads(answer.body)["error"]
    assert error["code"] == case.code
    assert case.message in error["message"] and len(error["message"]) > 10, error["message"]
    assert error["request_id"] == answer.headers["x-request-id"]


def test_after_the_table_the_same_server_answers_a_photo_as_before(server, photo_answer_before):
    log = server.log()
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
    assert server.process.poll() is None
    assert server.ping().status_code == 200
    response = server.invoke(INPUT_PHOTO.read_bytes(), "image/jpeg")
    assert response.status_code == 200, response.text
    assert json.loads(response.content)["instances"]
    assert response.content == photo_answer_before
