"""The HTTP layer: SageMaker's routes over the model server (`model_server.py`), and the mapping of
requests and errors onto it.

    GET  /ping                  200 once every model copy is loaded and warmed up and while at least
                                one can serve (see model_pool's health); 503 before, otherwise and
                                after SIGTERM
    POST /invocations           decode (codec thread) -> predict (the first free model copy's thread)
                                -> encode (codec thread); refused at once when it cannot finish in time
    GET  /execution-parameters  batch transform's suggested parameters

The event loop only reads bodies and writes responses, so /ping answers at once while inferences
run. Loading starts in the background after the socket is bound, as SageMaker expects a
listening port within moments of start and a 200 only when the model can answer.

Each request is logged once, when it is answered, with its request id, status, error code, bytes in
and out, and the time it spent decoding, queued, on the model and encoding (`logs.py` writes it as
one JSON object). A caller that disconnects after sending its body is noticed while its request
waits: the request is never started, and is logged as `client disconnected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_server.content_types import media_type
from inference_server.errors import (
    INTERNAL_ERROR,
    BodyIncomplete,
    ErrorKind,
    ModelNotReady,
    ModelUnhealthy,
    PayloadTooLarge,
    ReadTimedOut,
    ServingError,
    ShuttingDown,
    error_document,
    error_kind,
)
from inference_server.model_server import (
    SHUTDOWN_RETRY_AFTER_S,
    WAITING_STAGES,
    ModelServer,
    RequestTrace,
    Stage,
)
from inference_server.settings import MIB, Settings

logger = logging.getLogger("inference_server")

CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
REQUEST_ID_HEADER = "X-Request-Id"
# After a body turns out too large, read and discard up to this much more before answering 413, so
# a client still sending gets the response instead of a connection reset.
DRAIN_LIMIT_BYTES = 64 * MIB
# A body that stops arriving this long before it is complete (a Content-Length larger than what the
# client sends) is answered 408 instead of holding the connection open for ever; one that keeps
# trickling in is answered 408 when READ_TIMEOUT_S has passed.
BODY_IDLE_TIMEOUT_S = 10
# The status logged for a request whose caller left before its answer (nginx's convention; nothing is
# sent).
CLIENT_CLOSED_REQUEST = 499


async def read_body(request: Request, settings: Settings, trace: RequestTrace) -> bytes:
    """The body; 413 when Content-Length or the bytes actually received exceed the mode's limit, 408
    when the body stops arriving before it is complete, or is not complete within READ_TIMEOUT_S."""
    limit = settings.max_request_bytes
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > limit
    message = f"request body exceeds {limit} bytes ({limit / MIB:g} MiB), the limit in {settings.mode} mode"
    if too_large and int(declared) > limit + DRAIN_LIMIT_BYTES:
        raise PayloadTooLarge(message)  # more than would be drained anyway: answer before reading
    chunks: list[bytes] = []
    expected = f" of the {declared} bytes its Content-Length declares" if declared else ""
    stream = request.stream()
    deadline = asyncio.get_running_loop().time() + settings.read_timeout_s
    while True:
        try:
            async with asyncio.timeout_at(
                min(deadline, asyncio.get_running_loop().time() + BODY_IDLE_TIMEOUT_S)
            ):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            if too_large:
                break
            if asyncio.get_running_loop().time() >= deadline:
                raise ReadTimedOut(
                    f"the body was not complete {settings.read_timeout_s} s after its headers "
                    f"(READ_TIMEOUT_S): {trace.bytes_in} bytes{expected} had arrived"
                ) from None
            raise BodyIncomplete(
                f"the body stopped arriving after {trace.bytes_in} bytes{expected}; "
                f"nothing more came in {BODY_IDLE_TIMEOUT_S} s"
            ) from None
        trace.bytes_in += len(chunk)
        too_large = too_large or trace.bytes_in > limit
        if not too_large:
            chunks.append(chunk)
        elif trace.bytes_in > limit + DRAIN_LIMIT_BYTES:
            break
    if too_large:
        raise PayloadTooLarge(message)
    return b"".join(chunks)


def error_response(
    kind: ErrorKind,
    message: str,
    request_id: str,
    status: int | None = None,
    retry_after_s: int | None = None,
) -> JSONResponse:
    headers = {REQUEST_ID_HEADER: request_id}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(
        error_document(kind, message, request_id, retry_after_s),
        status_code=kind.status if status is None else status,
        headers=headers,
    )


def internal_error_response(request_id: str) -> JSONResponse:
    # No exception text: it can leak paths and data, and the log has the full traceback.
    message = f"internal error; the server log has the details under request id {request_id}"
    return error_response(INTERNAL_ERROR, message, request_id)


def new_request_id() -> str:
    return uuid.uuid4().hex


async def ping(request: Request) -> Response:
    """200 while at least one model copy can serve; 503 while loading, once none can (hung or out
    of service), so SageMaker takes the instance out of the endpoint and replaces it, and after SIGTERM."""
    server: ModelServer = request.app.state.server
    if server.stopping:
        return error_response(
            error_kind(ShuttingDown()),
            "the server is shutting down (SIGTERM)",
            new_request_id(),
            retry_after_s=SHUTDOWN_RETRY_AFTER_S,
        )
    health = server.health()
    if health is None:
        return error_response(error_kind(ModelNotReady()), "the model is loading", new_request_id())
    if health.can_serve:
        return Response(status_code=200)
    return error_response(error_kind(ModelUnhealthy()), health.describe(), new_request_id())


async def _watch_for_disconnect(server: ModelServer, request: Request, trace: RequestTrace) -> None:
    """Once the body is read, the next ASGI message is the disconnect (uvicorn sends one when the
    connection is lost): the request is then never started."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    server.client_disconnected(trace)


async def invoke(server: ModelServer, request: Request, trace: RequestTrace) -> Response:
    headers = request.headers
    context = server.accept(
        trace.request_id,
        content_type=headers.get("content-type", ""),
        accept=headers.get("accept", ""),
        custom_attributes=headers.get(CUSTOM_ATTRIBUTES_HEADER, ""),
    )
    body = await read_body(request, server.settings, trace)
    trace.stage = Stage.DISPATCHING
    if await request.is_disconnected():
        server.client_disconnected(trace, interrupt=False)  # gone already: not dispatched at all
        raise asyncio.CancelledError
    watcher = asyncio.create_task(_watch_for_disconnect(server, request, trace))
    try:
        payload, response_type = await server.infer(body, context, trace)
    finally:
        watcher.cancel()
    return Response(payload, media_type=response_type, headers={REQUEST_ID_HEADER: trace.request_id})


async def invocations(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    trace = RequestTrace(new_request_id())
    request_id = trace.request_id
    outcome: dict[str, object] = {}
    with server.track(trace):
        try:
            response = await invoke(server, request, trace)
        except ClientDisconnect:
            # The caller gave up (e.g. the platform's own timeout) mid-body: nobody reads an answer.
            logger.info(
                "request %s: client disconnected before sending its whole body",
                request_id,
                extra={"request_id": request_id, "status": CLIENT_CLOSED_REQUEST, "bytes_in": trace.bytes_in},
            )
            return Response(status_code=400)
        except asyncio.CancelledError:
            # Cancelled by the server itself (a caller gone, or the shutdown): answered here. Any
            # other cancellation (uvicorn's own, past its grace period) goes on.
            if not (trace.client_gone or trace.cancelled_because) or (task := asyncio.current_task()) is None:
                raise
            task.uncancel()
            if trace.cancelled_because is not None:
                error = trace.cancelled_because
                outcome["cancelled"] = "shutdown"
                response = error_response(
                    error_kind(error), str(error), request_id, retry_after_s=error.retry_after_s
                )
            else:
                outcome["cancelled"] = "client disconnected"
                response = Response(status_code=CLIENT_CLOSED_REQUEST)
            outcome["stage"] = trace.stage
        except ServingError as error:
            kind = error_kind(error)
            outcome["code"] = kind.code
            # Batch transform fails a whole input file on one non-200 record; answer a bad record with
            # an error object in its place instead (BATCH_RECORD_ERRORS=object).
            as_record = kind.record_error and server.settings.record_errors_as_objects
            response = error_response(
                kind,
                str(error),
                request_id,
                status=200 if as_record else None,
                retry_after_s=error.retry_after_s,
            )
            if isinstance(error, ReadTimedOut | BodyIncomplete):
                # The rest of the body is not read: the connection cannot carry another request (and a
                # slow sender must not keep it).
                response.headers["connection"] = "close"
        except Exception:
            logger.exception(
                "request %s failed with an internal error", request_id, extra={"request_id": request_id}
            )
            outcome["code"] = INTERNAL_ERROR.code
            response = internal_error_response(request_id)
        log_request(request, response, trace, outcome)
    return response


def log_request(
    request: Request, response: Response, trace: RequestTrace, outcome: dict[str, object]
) -> None:
    """The request's one line: what came in, what went out, and where the time went."""
    content_type = media_type(request.headers.get("content-type")) or "-"
    total_ms = (time.monotonic() - trace.received) * 1000
    timings = trace.timings_ms()
    spent = ", ".join(
        f"{name.removesuffix('_ms').replace('_', ' ')} {value:.0f} ms"
        for name, value in timings.items()
        if value is not None
    )
    bytes_out = len(response.body) if response.status_code != CLIENT_CLOSED_REQUEST else 0
    if outcome.get("cancelled") == "client disconnected":
        summary = f"client disconnected while {outcome['stage']}" + (
            "; never computed" if outcome["stage"] in WAITING_STAGES else "; its inference ran for nobody"
        )
    elif outcome.get("cancelled") == "shutdown":
        summary = f"{response.status_code} cancelled by the shutdown while {outcome['stage']}"
    else:
        summary = str(response.status_code)
    logger.info(
        "POST /invocations %s -> %s in %.0f ms%s (request %s)",
        content_type,
        summary,
        total_ms,
        f" ({spent}; {trace.bytes_in} bytes in, {bytes_out} out)" if spent else "",
        trace.request_id,
        extra={
            "request_id": trace.request_id,
            "status": response.status_code,
            **outcome,
            "content_type": content_type,
            "total_ms": round(total_ms, 1),
            **timings,
            "bytes_in": trace.bytes_in,
            "bytes_out": bytes_out,
        },
    )


async def execution_parameters(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    return JSONResponse(server.settings.execution_parameters(server.model_copies))


async def http_error(request: Request, error: Exception) -> Response:
    """Unknown routes and methods answer in the same JSON error shape as everything else."""
    assert isinstance(error, HTTPException)
    kind = ErrorKind(error.status_code, "not_found" if error.status_code == 404 else "method_not_allowed")
    return error_response(kind, f"{request.method} {request.url.path}: {error.detail}", new_request_id())


async def unexpected_error(request: Request, error: Exception) -> Response:
    request_id = new_request_id()
    logger.error("request %s failed with an internal error", request_id, exc_info=error)
    return internal_error_response(request_id)


def create_app(settings: Settings, on_load_failure: Callable[[], None] = lambda: None) -> Starlette:
    server = ModelServer(settings, on_load_failure)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(server.load())
        yield
        loading.cancel()
        server.close()

    app = Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/execution-parameters", execution_parameters, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: unexpected_error},
        lifespan=lifespan,
    )
    app.state.server = server
    return app
