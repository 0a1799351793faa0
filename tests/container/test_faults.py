"""Faults against the real server process (real-time mode, torchvision artifact), as a table: each row
provokes one fault and says what the caller gets, what /ping then says, and whether the process
goes on serving (a valid photo still answers 200) or exits, and with which status. The same table is
docs/failure-behaviour.md, which adds what SageMaker then does.

The faults come from a code/inference.py written into a copy of the artifact, driven per request by
a custom attribute (`fault=<name>`) or by files in a control folder that the test creates and
removes: a handler told to hang touches `entered-<name>` and waits while `hold-<name>` exists, so
the test waits on conditions (a file, a log record), never on a guess of how long something takes.

To add a fault: write a provoke function and append a `Fault` to FAULTS.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from .artifacts import TEST_IMAGES
from .conftest import RunningServer, ServerLauncher, free_port

INPUT_PHOTO = next(path for path in TEST_IMAGES if path.name == "input.jpg")
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# Generous for a busy 2-core machine; each is a bound on a wait for a condition, not a measurement.
WAIT_S = 120
# The shared server's request limit (REQUEST_TIMEOUT_S) and read deadline (READ_TIMEOUT_S). The limit
# leaves room for the rows' real inferences on a starved machine: one took 14 s on two busy cores, and
# admission refuses a request (503 overloaded) when an inference would not fit in what is left.
REQUEST_TIMEOUT_S = 30
READ_TIMEOUT_S = 5
# SageMaker sends SIGKILL 30 s after SIGTERM: a stopping server must have exited by then.
SAGEMAKER_KILL_AFTER_S = 30
# A SIGTERM during the model load is obeyed at once: the load is abandoned (issue 17's bound).
EXIT_DURING_LOAD_WITHIN_S = 10
# The watchdog rows' server: a hung inference counts as hung after 2 x HANG_TIMEOUT_S, and /ping must
# fail well within HANG_PING_FAILS_WITHIN_S of the hang starting (issue 17's bounds).
HANG_TIMEOUT_S = 8
HANG_PING_FAILS_WITHIN_S = 60
# The default UNHEALTHY_AFTER_ERRORS; a sticky error must fail /ping within STICKY_ERROR_REQUESTS.
UNHEALTHY_AFTER_ERRORS = 5
STICKY_ERROR_REQUESTS = 20

# Every handler, each with faults on request. output_fn is always the test's own, so that the server
# leaves the custom attributes (`fault=...`) to it instead of refusing them as unknown options; input_fn
# only when TEST_OVERRIDE_INPUT_FN is set (a custom input_fn turns the warm-up off, which the shutdown
# rows need for their estimate).
FAULTY_INFERENCE_PY = """
    import os
    import time
    from pathlib import Path

    from inference_server import artifact, handlers

    CONTROL = Path(os.environ["TEST_CONTROL_DIR"])


    class CustomAbort(BaseException):
        pass


    RAISES = {
        "systemexit": lambda: SystemExit(3),
        "keyboardinterrupt": lambda: KeyboardInterrupt(),
        "baseexception": lambda: CustomAbort("a BaseException subclass"),
        "cuda": lambda: RuntimeError("CUDA error: an illegal memory access was encountered"),
    }


    def fault(context):
        for item in context.custom_attributes.split(","):
            key, _, value = item.partition("=")
            if key.strip() == "fault":
                return value.strip()
        return ""


    def hold(name, request_id):
        (CONTROL / f"entered-{name}").write_text(request_id)
        while (CONTROL / f"hold-{name}").exists():
            time.sleep(0.05)


    def raise_if(step, context):
        name = fault(context)
        if name.startswith(step + "-") and name.removeprefix(step + "-") in RAISES:
            raise RAISES[name.removeprefix(step + "-")]()
        if name == f"hang-{step}":
            hold(step, context.request_id)


    def model_fn(model_dir):
        (CONTROL / "loading").touch()
        while (CONTROL / "hold-load").exists():
            time.sleep(0.05)
        load_seconds = CONTROL / "load-seconds"
        if load_seconds.exists():
            time.sleep(float(load_seconds.read_text()))  # one blocking call, as a slow weights download
        raises = CONTROL / "model-fn-raises"
        if raises.exists():
            raise RAISES[raises.read_text()]()
        return artifact.load_predictor(Path(model_dir))


    def predict_fn(data, model, context):
        with open(CONTROL / "computed", "a") as log:
            log.write(context.request_id + "\\n")
        warm_up_seconds = CONTROL / "warm-up-seconds"
        if context.request_id == "warm-up" and warm_up_seconds.exists():
            time.sleep(float(warm_up_seconds.read_text()))  # the server's first estimate of an inference
            return None
        if (CONTROL / "every-inference-raises").exists():
            raise RAISES["cuda"]()  # a sticky device error: every inference after the first fails
        raise_if("predict", context)
        if fault(context).startswith("output-"):
            return None  # output_fn's fault needs no prediction: the row saves an inference
        return model(data)


    def output_fn(prediction, accept, context):
        raise_if("output", context)
        results = {
            "output-int": lambda: 5,
            "output-none": lambda: None,
            "output-dict": lambda: {"instances": []},
            "output-crlf": lambda: (b"{}", "application/json\\r\\nX-Injected: 1"),
            "output-type-int": lambda: (b"{}", 5),
            "output-triple": lambda: (b"{}", "application/json", 200),
        }
        if fault(context) in results:
            return results[fault(context)]()
        return handlers.default_output_fn(prediction, accept, context)


    if os.environ.get("TEST_OVERRIDE_INPUT_FN"):

        def input_fn(body, content_type, context):
            raise_if("input", context)
            return handlers.default_input_fn(body, content_type, context)
"""


@dataclass
class Harness:
    """A server on the faulty artifact and its control folder; fresh rows start their own."""

    launcher: ServerLauncher
    model_dir: Path
    control: Path
    server: RunningServer | None = None

    def start(self, env: dict[str, str] | None = None, *, wait_ready: bool = True, **kwargs) -> RunningServer:
        self.server = self.launcher(
            self.model_dir,
            {"TEST_CONTROL_DIR": str(self.control), **(env or {})},
            wait_ready=wait_ready,
            **kwargs,
        )
        return self.server

    @property
    def live(self) -> RunningServer:
        assert self.server is not None
        return self.server

    def invoke(
        self, fault: str = "", body: bytes | None = None, content_type: str = "image/jpeg"
    ) -> requests.Response:
        headers = {CUSTOM_ATTRIBUTES: f"fault={fault}"} if fault else {}
        return self.live.invoke(INPUT_PHOTO.read_bytes() if body is None else body, content_type, headers)

    @contextlib.contextmanager
    def holding(self, name: str) -> Iterator[None]:
        """Handlers told to hang at `name` wait until the block ends."""
        (self.control / f"entered-{name}").unlink(missing_ok=True)
        (self.control / f"hold-{name}").touch()
        try:
            yield
        finally:
            (self.control / f"hold-{name}").unlink(missing_ok=True)

    def wait_entered(self, name: str) -> str:
        """The request id that reached the hang at `name`."""
        path = self.control / f"entered-{name}"
        wait_until(lambda: path.exists() and path.read_text(), f"a handler to reach hang-{name}", self.live)
        return path.read_text()

    def computed(self) -> list[str]:
        path = self.control / "computed"
        return path.read_text().split() if path.exists() else []


class Background:
    """A request sent on its own thread; its response is collected by result()."""

    def __init__(self, call: Callable[[], requests.Response]) -> None:
        self.responses: list[requests.Response] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], requests.Response]) -> None:
        try:
            self.responses.append(call())
        except BaseException as error:
            self.errors.append(error)

    def result(self) -> requests.Response:
        self.thread.join(timeout=WAIT_S)
        assert not self.thread.is_alive(), "no response"
        assert not self.errors, self.errors
        return self.responses[0]


def wait_until(condition: Callable[[], object], what: str, server: RunningServer | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}" + (
            f":\n{server.log()[-3000:]}" if server is not None else ""
        )
        time.sleep(0.05)


def log_records(server: RunningServer, **fields: object) -> list[dict]:
    return [record for record in server.records() if all(record.get(k) == v for k, v in fields.items())]


def ping_status(server: RunningServer) -> int | None:
    """/ping's status, or None when nothing answers (not listening)."""
    try:
        return server.ping(timeout=5).status_code
    except requests.ConnectionError:
        return None


def assert_not_routed_to(server: RunningServer) -> None:
    """After SIGTERM /ping answers 503 shutting_down until uvicorn stops listening (at its next check,
    within moments), then nothing answers: either way SageMaker routes nothing more here."""
    try:
        response = server.ping(timeout=5)
    except requests.ConnectionError:
        return
    assert response.status_code == 503 and response.json()["error"]["code"] == "shutting_down", response.text


# --- what a row observes, and what it expects ----------------------------------------------------------


@dataclass
class Observed:
    status: int | None  # None: the caller got no HTTP answer (it had gone)
    body: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, response: requests.Response) -> Observed:
        try:
            body = response.json()
        except ValueError:
            body = {"raw": response.text}
        return cls(response.status_code, body, {k.lower(): v for k, v in response.headers.items()})


@dataclass(frozen=True)
class Expect:
    status: int | None  # what the caller gets; None: no answer (it disconnected)
    code: str | None = None  # the JSON error code
    message: str = ""  # part of the error message
    logged: str = ""  # part of a log record (message or traceback) under the request's id
    ping: int | None = 200  # /ping afterwards; None: nothing listens
    exit_status: int | None = None  # None: the process goes on (serving, unless serves is False)
    # Whether a valid photo is answered 200 afterwards; False: it is refused at once with 503
    # model_unhealthy (never computed), as every request is while no model copy can serve.
    serves: bool = True


@dataclass(frozen=True)
class Fault:
    name: str
    provoke: Callable[[Harness], Observed]
    expect: Expect
    fresh: bool = False  # starts (and stops) a server of its own instead of the shared one

    def __str__(self) -> str:
        return self.name


# --- handler faults on the shared server ---------------------------------------------------------------


def fault_request(fault: str) -> Callable[[Harness], Observed]:
    return lambda harness: Observed.of(harness.invoke(fault))


def hung_codec(step: str) -> Callable[[Harness], Observed]:
    """A user input_fn/output_fn that never returns holds one codec thread: its caller gets 503 at
    REQUEST_TIMEOUT_S, while another request is served meanwhile on the other codec thread."""

    def provoke(harness: Harness) -> Observed:
        with harness.holding(step):
            hung = Background(lambda: harness.invoke(f"hang-{step}"))
            harness.wait_entered(step)
            assert harness.invoke().status_code == 200  # the other codec thread serves
            return Observed.of(hung.result())

    return provoke


def vanished_while_waiting(harness: Harness) -> Observed:
    """A caller that sends its photo and hangs up while the one copy is busy: never computed."""
    with harness.holding("predict"):
        busy = Background(lambda: harness.invoke("hang-predict"))
        holder = harness.wait_entered("predict")
        computed_before = len(harness.computed())
        gone_before = len(log_records(harness.live, cancelled="client disconnected"))
        send_and_hang_up(harness.live, INPUT_PHOTO.read_bytes())
        wait_until(
            lambda: len(log_records(harness.live, cancelled="client disconnected")) > gone_before,
            "the server to notice the caller left",
            harness.live,
        )
    assert busy.result().status_code == 200
    record = log_records(harness.live, cancelled="client disconnected")[-1]
    assert record["stage"] in ("about to be decoded", "decoding", "queued"), record
    assert "never computed" in record["message"] and record["status"] == 499
    assert harness.computed()[computed_before - 1 :] == [holder]  # only the busy request ran
    return Observed(None)


def vanished_while_running(harness: Harness) -> Observed:
    """A caller that hangs up while its inference runs: the copy finishes it, the answer is dropped."""
    with harness.holding("predict"):
        gone_before = len(log_records(harness.live, cancelled="client disconnected"))
        connection = open_request(harness.live, INPUT_PHOTO.read_bytes(), fault="hang-predict")
        harness.wait_entered("predict")
        connection.close()
        wait_until(
            lambda: len(log_records(harness.live, cancelled="client disconnected")) > gone_before,
            "the server to notice the caller left",
            harness.live,
        )
    record = log_records(harness.live, cancelled="client disconnected")[-1]
    assert record["stage"] == "running on a model copy" and "ran for nobody" in record["message"]
    return Observed(None)


def open_request(server: RunningServer, body: bytes, fault: str = "") -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=WAIT_S)
    attributes = f"{CUSTOM_ATTRIBUTES}: fault={fault}\r\n" if fault else ""
    connection.sendall(
        f"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n{attributes}"
        f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
        + body
    )
    return connection


def send_and_hang_up(server: RunningServer, body: bytes) -> None:
    open_request(server, body).close()


def slow_body(harness: Harness) -> Observed:
    """A body at 1 byte/s (each byte well within the 10 s idle limit): 408 at READ_TIMEOUT_S."""
    host, port = harness.live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as connection:
        connection.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        return trickle_until_answered(connection, b"\xff" * 1000)


def slow_headers(harness: Harness) -> Observed:
    """Headers at 1 byte/s (slowloris): 408 at READ_TIMEOUT_S after the first byte, then closed."""
    host, port = harness.live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as connection:
        return trickle_until_answered(
            connection, b"POST /invocations HTTP/1.1\r\nHost: test\r\n" + b"X-Pad: a" * 200
        )


def trickle_until_answered(connection: socket.socket, data: bytes) -> Observed:
    """Send one byte a second (the client's own pace) until the server answers."""
    connection.setblocking(False)
    received = b""
    for byte in data:
        with contextlib.suppress(BlockingIOError):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        if b"\r\n\r\n" in received:
            break
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.send(bytes([byte]))
        time.sleep(1)
    connection.setblocking(True)
    connection.settimeout(WAIT_S)
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head, "the connection closed without an answer"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in header_lines)}
    assert headers.get("connection") == "close"
    return Observed(int(status_line.split()[1]), json.loads(body), headers)


def large_image(harness: Harness) -> Observed:
    """A 12 MP photo-sized image (a gradient: a small JPEG) within every limit: answered in full."""
    height, width = 3000, 4000
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(gradient, (height, width, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    observed = Observed.of(harness.invoke(body=buffer.getvalue()))
    assert observed.body.get("image") == {"height": height, "width": width}, observed.body
    return observed


# --- process faults: each on a server of its own -------------------------------------------------------


def sigterm_with_a_full_queue(harness: Harness) -> Observed:
    """One request running, four queued, an inference estimated at 10 s: SIGTERM answers at once the
    three that cannot finish within the grace period; the running one and the next finish."""
    (harness.control / "warm-up-seconds").write_text("10")
    server = harness.start({"MODEL_COPIES": "1", "REQUEST_TIMEOUT_S": "3600", "LOG_LEVEL": "debug"})
    with harness.holding("predict"):
        running = Background(lambda: harness.invoke("hang-predict"))
        harness.wait_entered("predict")
        queued = [Background(lambda: harness.invoke()) for _ in range(4)]
        wait_until(lambda: len(log_records(server, stage="queued")) >= 4, "four queued requests", server)
        server.process.send_signal(signal.SIGTERM)
        answered = queued
        wait_until(
            lambda: sum(bool(b.responses) for b in answered) >= 3, "three queued requests answered", server
        )
        refused = [Observed.of(b.responses[0]) for b in answered if b.responses]
        assert [o.status for o in refused] == [503] * 3
        assert_not_routed_to(server)
        assert server.process.poll() is None  # still finishing the running request
    assert running.result().status_code == 200
    assert [b.result().status_code for b in answered].count(200) == 1
    for observed in refused:
        error = observed.body["error"]
        assert error["code"] == "shutting_down" and error["retry_after_s"] == 1
        assert observed.headers["retry-after"] == "1"
        (record,) = log_records(server, request_id=error["request_id"], cancelled="shutdown")
        assert record["status"] == 503 and record["stage"] in ("queued", "decoding")
    return refused[0]


def sigterm_while_predict_hangs(harness: Harness) -> Observed:
    """A predict_fn that never returns: at the end of the grace period its caller gets 503, and the
    process exits 0 before SageMaker's SIGKILL."""
    server = harness.start()
    with harness.holding("predict"):
        hung = Background(lambda: harness.invoke("hang-predict"))
        harness.wait_entered("predict")
        server.process.send_signal(signal.SIGTERM)
        observed = Observed.of(hung.result())
        server.process.wait(timeout=SAGEMAKER_KILL_AFTER_S)
    return observed


def sigterm_while_input_fn_hangs(harness: Harness) -> Observed:
    server = harness.start({"TEST_OVERRIDE_INPUT_FN": "1"})
    with harness.holding("input"):
        hung = Background(lambda: harness.invoke("hang-input"))
        harness.wait_entered("input")
        server.process.send_signal(signal.SIGTERM)
        observed = Observed.of(hung.result())
        server.process.wait(timeout=SAGEMAKER_KILL_AFTER_S)
    return observed


def sigterm_during_load(harness: Harness) -> Observed:
    """SIGTERM while model_fn is still loading (held for ever): the process exits at once, status 0."""
    with harness.holding("load"):
        server = harness.start(wait_ready=False)
        wait_until(lambda: (harness.control / "loading").exists(), "model_fn to start", server)
        server.wait_until_listening()
        observed = Observed.of(server.ping())
        assert observed.status == 503 and observed.body["error"]["code"] == "model_not_ready"
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=EXIT_DURING_LOAD_WITHIN_S)
    assert "model loaded" not in server.log()
    return observed


def hung_predict(harness: Harness) -> Observed:
    """A predict_fn that never returns, REQUEST_TIMEOUT_S=8, one copy: its caller gets 503 at the
    timeout; at 2 x REQUEST_TIMEOUT_S the copy counts as hung and /ping fails (SageMaker replaces the
    instance); the hang is left in place for the row's checks (the server is killed after the row)."""
    server = harness.start({"MODEL_COPIES": "1", "REQUEST_TIMEOUT_S": str(HANG_TIMEOUT_S)})
    (harness.control / "hold-predict").touch()
    hung = Background(lambda: harness.invoke("hang-predict"))
    harness.wait_entered("predict")
    hang_started = time.monotonic()
    observed = Observed.of(hung.result())
    # A bound from the issue, on a wait for a condition: /ping turns 503 (in theory at 16 s).
    deadline = hang_started + HANG_PING_FAILS_WITHIN_S
    while (status := ping_status(server)) == 200:
        assert time.monotonic() < deadline, f"/ping still 200 {HANG_PING_FAILS_WITHIN_S} s into the hang"
        time.sleep(0.1)
    assert status == 503
    body = server.ping().json()["error"]
    assert body["code"] == "model_unhealthy" and "counts as hung" in body["message"], body
    assert "2 x REQUEST_TIMEOUT_S" in body["message"]
    assert log_records(server, level="ERROR") and any(
        "counts as hung" in record["message"] for record in log_records(server, level="ERROR")
    )
    return observed


def every_inference_raises(harness: Harness) -> Observed:
    """A sticky device error (every inference raises "CUDA error: an illegal memory access"): each
    caller gets a JSON 500 until UNHEALTHY_AFTER_ERRORS of them in a row; then /ping fails."""
    server = harness.start({"MODEL_COPIES": "1"})
    (harness.control / "every-inference-raises").touch()
    failed: list[Observed] = []
    while ping_status(server) == 200:
        assert len(failed) < STICKY_ERROR_REQUESTS, f"/ping still 200 after {len(failed)} failed requests"
        failed.append(Observed.of(harness.invoke()))
    assert len(failed) == UNHEALTHY_AFTER_ERRORS
    assert {(o.status, o.body["error"]["code"]) for o in failed} == {(500, "internal_error")}
    body = server.ping().json()["error"]
    assert body["code"] == "model_unhealthy" and "UNHEALTHY_AFTER_ERRORS=5" in body["message"], body
    assert "CUDA error: an illegal memory access" in body["message"]
    assert any("out of service" in record["message"] for record in log_records(server, level="ERROR"))
    return failed[-1]


def sigterm_during_a_45_s_load(harness: Harness) -> Observed:
    """SIGTERM while model_fn is inside one 45 s call (a weights download): exit 0 within 10 s."""
    (harness.control / "load-seconds").write_text("45")
    server = harness.start(wait_ready=False)
    wait_until(lambda: (harness.control / "loading").exists(), "model_fn to start", server)
    server.wait_until_listening()
    observed = Observed.of(server.ping())
    server.process.send_signal(signal.SIGTERM)
    # The bound on the wait; the load would only end 45 s after it began.
    assert server.process.wait(timeout=EXIT_DURING_LOAD_WITHIN_S) == 0, server.log()[-3000:]
    assert "model loaded" not in server.log()
    return observed


def model_fn_raises(exception: str) -> Callable[[Harness], Observed]:
    def provoke(harness: Harness) -> Observed:
        (harness.control / "model-fn-raises").write_text(exception)
        server = harness.start(wait_ready=False)
        statuses = set()
        while server.process.poll() is None:
            statuses.add(ping_status(server))
            time.sleep(0.05)
        assert 200 not in statuses  # never reported ready
        assert len([line for line in server.log().splitlines() if "model failed to load" in line]) == 1
        return Observed(None)

    return provoke


def port_in_use(harness: Harness) -> Observed:
    """Another process holds the port: exit 3 before anything loads."""
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        server = harness.start(wait_ready=False, port=port)
        server.process.wait(timeout=WAIT_S)
    assert not (harness.control / "loading").exists()  # model_fn never ran
    assert "cannot listen on 127.0.0.1" in server.log()
    return Observed(None)


def internal_error(logged: str) -> Expect:
    return Expect(500, "internal_error", "internal error; the server log has the details", logged)


def invalid_result(message: str) -> Expect:
    return Expect(500, "invalid_handler_result", message)


FAULTS = [
    Fault("predict_fn raises SystemExit", fault_request("predict-systemexit"), internal_error("SystemExit")),
    Fault(
        "predict_fn raises KeyboardInterrupt",
        fault_request("predict-keyboardinterrupt"),
        internal_error("KeyboardInterrupt"),
    ),
    Fault(
        "predict_fn raises a BaseException subclass",
        fault_request("predict-baseexception"),
        internal_error("CustomAbort: a BaseException subclass"),
    ),
    Fault("input_fn raises SystemExit", fault_request("input-systemexit"), internal_error("SystemExit: 3")),
    Fault(
        "output_fn raises KeyboardInterrupt",
        fault_request("output-keyboardinterrupt"),
        internal_error("KeyboardInterrupt"),
    ),
    Fault(
        "predict_fn raises a CUDA error once",
        fault_request("predict-cuda"),
        internal_error("RuntimeError: CUDA error: an illegal memory access"),
    ),
    Fault(
        "output_fn returns an int",
        fault_request("output-int"),
        invalid_result("output_fn returned a body of type int"),
    ),
    Fault(
        "output_fn returns None",
        fault_request("output-none"),
        invalid_result("output_fn returned a body of type NoneType"),
    ),
    Fault(
        "output_fn returns a dict",
        fault_request("output-dict"),
        invalid_result("output_fn returned a body of type dict"),
    ),
    Fault(
        "output_fn returns a content type with CR/LF",
        fault_request("output-crlf"),
        invalid_result("output_fn returned content type 'application/json\\r\\nX-Injected: 1'"),
    ),
    Fault(
        "output_fn returns a content type that is not a str",
        fault_request("output-type-int"),
        invalid_result("output_fn returned content type int"),
    ),
    Fault(
        "output_fn returns a 3-tuple",
        fault_request("output-triple"),
        invalid_result("output_fn returned a tuple of 3 items"),
    ),
    Fault("input_fn hangs", hung_codec("input"), Expect(503, "request_timed_out", "REQUEST_TIMEOUT_S")),
    Fault("output_fn hangs", hung_codec("output"), Expect(503, "request_timed_out", "REQUEST_TIMEOUT_S")),
    Fault("the caller hangs up while its request waits", vanished_while_waiting, Expect(None)),
    Fault("the caller hangs up while its inference runs", vanished_while_running, Expect(None)),
    Fault("a body at 1 byte/s", slow_body, Expect(408, "read_timed_out", "(READ_TIMEOUT_S)")),
    Fault("headers at 1 byte/s", slow_headers, Expect(408, "read_timed_out", "headers were not complete")),
    Fault("a 12 MP image within the limits", large_image, Expect(200)),
    Fault(
        "SIGTERM with a full queue",
        sigterm_with_a_full_queue,
        Expect(
            503,
            "shutting_down",
            "cannot finish this request within its grace period",
            ping=None,
            exit_status=0,
        ),
        fresh=True,
    ),
    Fault(
        "SIGTERM while predict_fn hangs",
        sigterm_while_predict_hangs,
        Expect(503, "shutting_down", "still running on a model copy", ping=None, exit_status=0),
        fresh=True,
    ),
    Fault(
        "SIGTERM while input_fn hangs",
        sigterm_while_input_fn_hangs,
        Expect(503, "shutting_down", "still decoding", ping=None, exit_status=0),
        fresh=True,
    ),
    Fault(
        "SIGTERM during the model load",
        sigterm_during_load,
        Expect(503, "model_not_ready", "the model is loading", ping=None, exit_status=0),
        fresh=True,
    ),
    Fault(
        "SIGTERM while model_fn takes 45 s",
        sigterm_during_a_45_s_load,
        Expect(503, "model_not_ready", "the model is loading", ping=None, exit_status=0),
        fresh=True,
    ),
    Fault(
        "predict_fn hangs (REQUEST_TIMEOUT_S=8)",
        hung_predict,
        Expect(503, "request_timed_out", "REQUEST_TIMEOUT_S", ping=503, serves=False),
        fresh=True,
    ),
    Fault(
        "every inference raises a CUDA error (sticky)",
        every_inference_raises,
        Expect(
            500,
            "internal_error",
            "internal error; the server log has the details",
            "RuntimeError: CUDA error: an illegal memory access",
            ping=503,
            serves=False,
        ),
        fresh=True,
    ),
    Fault(
        "model_fn raises SystemExit",
        model_fn_raises("systemexit"),
        Expect(None, ping=None, exit_status=1),
        fresh=True,
    ),
    Fault(
        "model_fn raises KeyboardInterrupt",
        model_fn_raises("keyboardinterrupt"),
        Expect(None, ping=None, exit_status=1),
        fresh=True,
    ),
    Fault("the port is in use", port_in_use, Expect(None, ping=None, exit_status=3), fresh=True),
]


@pytest.fixture(scope="module")
def faulty_model_dir(torchvision_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = shutil.copytree(torchvision_model_dir, tmp_path_factory.mktemp("faulty") / "model")
    (model_dir / "code").mkdir(exist_ok=True)
    (model_dir / "code" / "inference.py").write_text(textwrap.dedent(FAULTY_INFERENCE_PY))
    return model_dir


@pytest.fixture(scope="module")
def shared(start_module_server, faulty_model_dir, tmp_path_factory) -> Harness:
    harness = Harness(start_module_server, faulty_model_dir, tmp_path_factory.mktemp("control"))
    harness.start(
        {
            "TEST_OVERRIDE_INPUT_FN": "1",
            "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            "READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        }
    )
    return harness


@pytest.fixture
def harness(request: pytest.FixtureRequest, start_server, faulty_model_dir, tmp_path) -> Harness:
    fault: Fault = request.param
    if fault.fresh:
        return Harness(start_server, faulty_model_dir, tmp_path / "control")
    return request.getfixturevalue("shared")


@pytest.mark.parametrize(
    "harness, fault", [(fault, fault) for fault in FAULTS], ids=str, indirect=["harness"]
)
def test_fault(harness: Harness, fault: Fault) -> None:
    harness.control.mkdir(parents=True, exist_ok=True)
    expect = fault.expect
    observed = fault.provoke(harness)
    server = harness.live

    # What the caller gets.
    assert observed.status == expect.status, observed
    if expect.code is not None:
        error = observed.body["error"]
        assert error["code"] == expect.code, error
        assert expect.message in error["message"], error
        assert error["request_id"] == observed.headers["x-request-id"]
        assert "Traceback" not in json.dumps(observed.body)
        if expect.logged:
            records = log_records(server, request_id=error["request_id"])
            assert any(expect.logged in f"{r['message']}\n{r.get('traceback', '')}" for r in records), records
            assert any("\n" in r.get("traceback", "") for r in records)  # the traceback, in one record

    # What /ping says, and whether the process serves or exits as documented.
    if expect.exit_status is None:
        assert ping_status(server) == expect.ping
        computed_before = len(harness.computed())
        photo = harness.invoke()
        if expect.serves:
            assert photo.status_code == 200 and photo.json()["instances"]
        else:
            assert photo.status_code == 503, photo.text
            error = photo.json()["error"]
            assert error["code"] == "model_unhealthy" and "no model copy can serve" in error["message"]
            assert error["request_id"] == photo.headers["x-request-id"]
            assert len(harness.computed()) == computed_before  # refused at admission: never computed
        assert server.process.poll() is None
    else:
        assert server.process.wait(timeout=SAGEMAKER_KILL_AFTER_S) == expect.exit_status, server.log()[-3000:]
        assert ping_status(server) is expect.ping


def test_every_log_line_is_one_json_object(shared: Harness) -> None:
    """CloudWatch makes each line an event: a traceback must stay inside its record."""
    lines = shared.live.raw_log().splitlines()
    assert lines and all(json.loads(line)["message"] is not None for line in lines), lines[:5]
    requests_logged = [r for r in shared.live.records() if r["message"].startswith("POST /invocations")]
    assert requests_logged
    for record in requests_logged:
        assert {"timestamp", "level", "request_id", "status", "total_ms", "bytes_in", "bytes_out"} <= set(
            record
        )
    served = [r for r in requests_logged if r["status"] == 200]
    assert served and all(r["model_ms"] is not None and r["queue_wait_ms"] is not None for r in served)
    assert all(r["encode_ms"] is not None and r["bytes_out"] > 0 for r in served)
