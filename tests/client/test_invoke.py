"""`d2sm invoke` against moto's server: canned InvokeEndpoint answers, results beside the images."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from moto.sagemaker.models import sagemaker_backends

from .helpers import ACCOUNT, ENDPOINTS, REGION, d2sm, detections, error_object, photo


def test_one_image_realtime_saves_the_result_beside_it(deployed, tmp_path, capsys):
    image = photo(tmp_path / "balloons.jpg")
    deployed.canned_results([json.dumps(detections())])

    run = d2sm(capsys, "invoke", image)

    assert run.code == 0, run.err
    saved = tmp_path / "balloons.jpg.json"
    assert json.loads(saved.read_text()) == detections()
    assert str(saved) in run.out


def test_folder_on_serverless_saves_one_result_per_image(deployed, tmp_path, capsys):
    images = [photo(tmp_path / f"photo{i}.{ext}", seed=i) for i, ext in enumerate(["jpg", "png", "jpeg"])]
    (tmp_path / "notes.txt").write_text("not an image")
    bodies = [detections() | {"n": i} for i in range(3)]
    deployed.canned_results([json.dumps(b) for b in bodies])

    run = d2sm(capsys, "invoke", tmp_path, "--mode", "serverless", "--concurrency", "2")

    assert run.code == 0, run.err
    saved = [json.loads((tmp_path / f"{image.name}.json").read_text()) for image in images]
    # Each image got one of the canned answers, none twice (requests ran concurrently).
    assert sorted(s["n"] for s in saved) == [0, 1, 2]
    assert not (tmp_path / "notes.txt.json").exists()
    assert "3 result(s) saved" in run.out


def test_endpoint_flag_skips_the_stack_lookup(deployed, tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    deployed.canned_results([json.dumps(detections())])
    run = d2sm(capsys, "--app-name", "NotDeployed", "invoke", image, "--endpoint", ENDPOINTS["Serverless"])
    assert run.code == 0, run.err


def test_missing_endpoint_is_one_line(deployed, tmp_path, capsys):
    run = d2sm(capsys, "invoke", photo(tmp_path / "a.jpg"), "--endpoint", "nope")
    assert (run.code, run.err) == (1, "error: endpoint nope does not exist\n")


def test_endpoint_not_in_service_is_refused(deployed, tmp_path, capsys):
    sagemaker_backends[ACCOUNT][REGION].endpoints[ENDPOINTS["Realtime"]].endpoint_status = "Creating"
    run = d2sm(capsys, "invoke", photo(tmp_path / "a.jpg"))
    assert run.code == 1
    assert (
        run.err
        == f"error: endpoint {ENDPOINTS['Realtime']} is Creating, not InService: wait for it or check its "
        "events\n"
    )
    assert not (tmp_path / "a.jpg.json").exists()


def test_stack_not_deployed_is_one_line(deployed, tmp_path, capsys):
    run = d2sm(capsys, "--app-name", "Other", "invoke", photo(tmp_path / "a.jpg"))
    assert run.code == 1
    assert run.err.startswith("error: stack Other-Realtime is not deployed")
    assert run.err.count("\n") == 1


def test_error_object_answer_fails_that_image_only(deployed, tmp_path, capsys):
    good, bad = photo(tmp_path / "a.jpg", seed=1), photo(tmp_path / "b.jpg", seed=2)
    # Canned answers go to requests in arrival order: one worker keeps that order a.jpg, b.jpg.
    deployed.canned_results([json.dumps(detections()), json.dumps(error_object())])

    run = d2sm(capsys, "invoke", tmp_path, "--concurrency", "1")

    assert run.code == 1
    assert (tmp_path / "a.jpg.json").exists() and not (tmp_path / "b.jpg.json").exists()
    assert (
        f"error: {bad}: endpoint {ENDPOINTS['Realtime']}: the model returned an error: invalid_input: the "
        "body is not a JPEG" in run.err
    )
    assert run.err.endswith("error: 1 of 2 images failed\n")
    del good


def test_no_credentials(deployed, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    run = d2sm(capsys, "invoke", photo(tmp_path / "a.jpg"))
    assert run.code == 1
    assert (
        run.err
        == "error: no AWS credentials found: configure a profile (aws configure) or set AWS_ACCESS_KEY_ID\n"
    )


class ThrottlingRuntime(ThreadingHTTPServer):
    """Stands in front of moto's runtime API: answers ThrottlingException `throttles` times, then
    forwards to moto (moto itself never throttles)."""

    def __init__(self, moto_url: str, throttles: int, refusal: tuple[int, str, dict] | None = None):
        self.moto_url, self.throttles, self.calls = moto_url, throttles, 0
        # (HTTP status, x-amzn-ErrorType, JSON body) of each refused call.
        self.refusal = refusal or (400, "ThrottlingException", {"message": "Rate exceeded"})
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ThrottlingHandler)


class ThrottlingHandler(BaseHTTPRequestHandler):
    server: ThrottlingRuntime

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.calls += 1
            self.server.headers.append({k.lower(): v for k, v in self.headers.items()})
            throttle = self.server.calls <= self.server.throttles
        if throttle:
            status, error_type, document = self.server.refusal
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("x-amzn-ErrorType", error_type)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        forwarded = urllib.request.Request(
            self.server.moto_url + self.path,
            data=body,
            headers={k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}},
        )
        with urllib.request.urlopen(forwarded) as answer:
            payload = answer.read()
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                if name.lower() not in {
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "date",
                    "server",
                }:
                    self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def throttling(deployed, monkeypatch):
    def start(throttles: int, refusal: tuple[int, str, dict] | None = None) -> ThrottlingRuntime:
        server = ThrottlingRuntime(deployed.url, throttles, refusal)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{server.server_port}")
        return server

    servers: list[ThrottlingRuntime] = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_throttling_is_retried_by_botocore(deployed, throttling, tmp_path, capsys):
    runtime = throttling(throttles=2)
    deployed.canned_results([json.dumps(detections())])

    run = d2sm(capsys, "--max-attempts", "3", "invoke", photo(tmp_path / "a.jpg"))

    assert run.code == 0, run.err
    assert runtime.calls == 3
    assert json.loads((tmp_path / "a.jpg.json").read_text()) == detections()


def test_throttled_after_every_retry_is_one_line(deployed, throttling, tmp_path, capsys):
    runtime = throttling(throttles=100)

    run = d2sm(capsys, "--max-attempts", "2", "invoke", photo(tmp_path / "a.jpg"))

    assert runtime.calls == 2
    assert run.code == 1
    assert run.err == (
        f"error: invoking {ENDPOINTS['Realtime']}: throttled after 2 attempts (ThrottlingException: "
        "Rate exceeded); lower --concurrency or retry later\n"
    )


def model_error(status: int, retry_after_s: int | None = 0) -> tuple[int, str, dict]:
    """What InvokeEndpoint answers when the container answered `status`: ModelError (424) carrying
    the container's status and body."""
    error: dict[str, object] = {"code": "overloaded", "message": "the queue is full", "request_id": "r1"}
    if retry_after_s is not None:
        error["retry_after_s"] = retry_after_s
    return (
        424,
        "ModelError",
        {
            "message": f"Received server error ({status}) from primary with message ...",
            "OriginalStatusCode": status,
            "OriginalMessage": json.dumps({"error": error}),
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x",
        },
    )


def test_container_503_through_the_endpoint_is_retried(deployed, throttling, tmp_path, capsys):
    runtime = throttling(throttles=2, refusal=model_error(503))
    deployed.canned_results([json.dumps(detections())])

    run = d2sm(capsys, "invoke", photo(tmp_path / "a.jpg"), "--retries", "2")

    assert run.code == 0, run.err
    assert runtime.calls == 3
    assert json.loads((tmp_path / "a.jpg.json").read_text()) == detections()


def test_container_400_through_the_endpoint_is_one_line_and_not_retried(
    deployed, throttling, tmp_path, capsys
):
    status, kind, body = model_error(400)
    body["OriginalMessage"] = json.dumps({"error": {"code": "invalid_input", "message": "not a JPEG"}})
    runtime = throttling(throttles=1, refusal=(status, kind, body))
    run = d2sm(capsys, "invoke", photo(tmp_path / "a.jpg"))
    assert runtime.calls == 1
    assert (run.code, run.err) == (
        1,
        f"error: invoking {ENDPOINTS['Realtime']}: the model answered 400: invalid_input: not a JPEG\n",
    )


def test_inference_component_and_target_variant_reach_the_request(deployed, throttling, tmp_path, capsys):
    runtime = throttling(throttles=0)
    deployed.canned_results([json.dumps(detections())])
    run = d2sm(
        capsys, "invoke", photo(tmp_path / "a.jpg"), "--inference-component", "ic-1", "--target-variant", "B"
    )
    assert run.code == 0, run.err
    [headers] = runtime.headers
    assert headers["x-amzn-sagemaker-inference-component"] == "ic-1"
    assert headers["x-amzn-sagemaker-target-variant"] == "B"


def test_inference_component_defaults_to_the_stack_output(deployed, throttling, tmp_path, capsys):
    import boto3

    from .helpers import stack

    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.delete_stack(StackName="Detectron2-Realtime")
    stack(
        cloudformation,
        "Detectron2-Realtime",
        {"EndpointName": ENDPOINTS["Realtime"], "InferenceComponentName": "detectron2-ic"},
    )
    runtime = throttling(throttles=0)
    deployed.canned_results([json.dumps(detections())])
    run = d2sm(capsys, "invoke", photo(tmp_path / "a.jpg"))
    assert run.code == 0, run.err
    assert runtime.headers[0]["x-amzn-sagemaker-inference-component"] == "detectron2-ic"
    assert "x-amzn-sagemaker-target-variant" not in runtime.headers[0]


def test_global_flags_after_the_subcommand(deployed, tmp_path, capsys):
    deployed.canned_results([json.dumps(detections())])
    run = d2sm(capsys, "invoke", photo(tmp_path / "a.jpg"), "--region", REGION, "--app-name", "Detectron2")
    assert run.code == 0, run.err
    wrong = d2sm(capsys, "invoke", photo(tmp_path / "b.jpg"), "--app-name", "Nope")
    assert wrong.err.startswith("error: stack Nope-Realtime is not deployed")


def test_result_path_that_is_a_directory_is_one_line(deployed, tmp_path, capsys):
    image = photo(tmp_path / "photo.jpg")
    (tmp_path / "photo.jpg.json").mkdir()
    deployed.canned_results([json.dumps(detections())])
    run = d2sm(capsys, "invoke", image, "--overwrite")
    assert run.code == 1
    assert run.err.startswith(f"error: cannot write {tmp_path / 'photo.jpg.json'}: ")
    assert run.err.count("\n") == 1


def test_unreadable_image_is_one_line(deployed, tmp_path, capsys):
    image = photo(tmp_path / "photo.jpg")
    image.chmod(0)
    try:
        if os.access(image, os.R_OK):
            pytest.skip("running as root: every file is readable")
        deployed.canned_results([json.dumps(detections())])
        run = d2sm(capsys, "invoke", image)
    finally:
        image.chmod(0o644)
    assert (run.code, run.err) == (1, f"error: cannot read image {image}: Permission denied\n")
