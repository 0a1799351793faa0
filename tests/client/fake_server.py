"""A stand-in for the inference server on 127.0.0.1 that counts requests and answers from a script:
503 with retry_after_s for the first N, or holds every request until the test releases it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        answer: bytes,
        *,
        refuse_first: int = 0,
        retry_after_s: float | None = 0,
        retry_after_header: str | None = None,
        hold: bool = False,
        hold_after: int = 0,
    ):
        self.answer, self.refuse_first = answer, refuse_first
        self.retry_after_s, self.retry_after_header = retry_after_s, retry_after_header
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        # hold: requests after the first `hold_after` wait on `release`; `held` is set when
        # `hold_target` of them are waiting.
        self.hold, self.hold_after = hold, hold_after
        self.release = threading.Event()
        self.held = threading.Event()
        self.hold_target = 0
        self.waiting = 0
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class FakeHandler(BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            number = len(self.server.requests)
            self.server.requests.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "attributes": self.headers.get("X-Amzn-SageMaker-Custom-Attributes"),
                    "size": len(body),
                }
            )
            hold = self.server.hold and number >= self.server.hold_after
            if hold:
                self.server.waiting += 1
                if self.server.waiting >= self.server.hold_target:
                    self.server.held.set()
        if hold:
            self.server.release.wait()
        if number < self.server.refuse_first:
            error: dict[str, object] = {
                "code": "overloaded",
                "message": "the queue is full",
                "request_id": f"r{number}",
            }
            if self.server.retry_after_s is not None:
                error["retry_after_s"] = self.server.retry_after_s
            headers = (
                {"Retry-After": self.server.retry_after_header} if self.server.retry_after_header else {}
            )
            self.reply(503, json.dumps({"error": error}).encode(), headers)
        else:
            self.reply(200, self.server.answer)

    def reply(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass
