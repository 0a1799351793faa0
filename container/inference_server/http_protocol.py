"""uvicorn's h11 connection protocol with the two deadlines it lacks.

- A connection that sends nothing is closed after the keep-alive timeout, as an idle kept-alive one
  is (uvicorn arms that timer only after a first response).
- A request's headers must be complete within READ_TIMEOUT_S of its first byte; if not (slowloris),
  the connection is answered 408 read_timed_out and closed. The body's own deadline is the
  application's (`app.read_body`), which sees the body arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from inference_server.errors import ReadTimedOut, error_document, error_kind

logger = logging.getLogger("inference_server")


class DeadlineH11Protocol(H11Protocol):
    read_timeout_s: float = 60.0  # set by `with_read_timeout`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_deadline: asyncio.TimerHandle | None = None
        self._first_byte_at = 0.0

    @classmethod
    def with_read_timeout(cls, read_timeout_s: float) -> type[DeadlineH11Protocol]:
        return type(cls.__name__, (cls,), {"read_timeout_s": float(read_timeout_s)})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._headers_deadline is None and self.conn.their_state is h11.IDLE:
            self._first_byte_at = time.monotonic()
            self._headers_deadline = self.loop.call_later(self.read_timeout_s, self._headers_timed_out)
        super().data_received(data)
        if self._headers_deadline is not None and self.conn.their_state is not h11.IDLE:
            self._cancel_headers_deadline()  # the request line and headers are in

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_headers_deadline()
        super().connection_lost(exc)

    def _cancel_headers_deadline(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_timed_out(self) -> None:
        self._headers_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        request_id = uuid.uuid4().hex
        error = ReadTimedOut(
            f"the request's headers were not complete {self.read_timeout_s:g} s after its first byte "
            "(READ_TIMEOUT_S)"
        )
        kind = error_kind(error)
        body = json.dumps(error_document(kind, str(error), request_id)).encode("utf-8")
        # Written as bytes: h11 cannot send a response to a request it has not parsed yet.
        head = (
            f"HTTP/1.1 {kind.status} Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.info(
            "connection from %s: request headers incomplete after %.0f s; answered %d, closed (request %s)",
            client,
            time.monotonic() - self._first_byte_at,
            kind.status,
            request_id,
            extra={"request_id": request_id, "status": kind.status, "code": kind.code},
        )
