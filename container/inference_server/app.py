"""The HTTP layer: SageMaker's routes over the model server (`model_server.py`), and the mapping of
requests and errors onto it.

    GET  /ping                  200 once every model copy is loaded and warmed up and while at least
                                one can serve (see model_pool's health); 503 before and otherwise
    POST /invocations           decode (codec thread) -> predict (the first free model copy's thread)
                                -> encode (codec thread); refused at once when it cannot finish in time
    GET  /execution-parameters  batch transform's suggested parameters

The event loop only reads bodies and writes responses, so /ping answers at once while inferences
run. Loading starts in the background after the socket is bound, as SageMaker expects a
listening port within moments of start and a 200 only when the model can answer.
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
    ServingError,
    error_document,
    error_kind,
)
from inference_server.model_server import ModelServer
from inference_server.settings import MIB, Settings

logger = logging.getLogger("inference_server")

CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
REQUEST_ID_HEADER = "X-Request-Id"
# After a body turns out too large, read and discard up to this much more before answering 413, so
# a client still sending gets the response instead of a connection reset.
DRAIN_LIMIT_BYTES = 64 * MIB
# A body that stops arriving this long before it is complete (a Content-Length larger than what the
# client sends) is answered 408 instead of holding the connection open for ever.
BODY_IDLE_TIMEOUT_S = 10


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body; 413 when Content-Length or the bytes actually received exceed the mode's limit, 408
    when the body stops arriving before it is complete."""
    limit = settings.max_request_bytes
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > limit
    message = f"request body exceeds {limit} bytes ({limit / MIB:g} MiB), the limit in {settings.mode} mode"
    if too_large and int(declared) > limit + DRAIN_LIMIT_BYTES:
        raise PayloadTooLarge(message)  # more than would be drained anyway: answer before reading
    chunks: list[bytes] = []
    received = 0
    stream = request.stream()
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE_TIMEOUT_S):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            if too_large:
                break
            expected = f" of the {declared} bytes its Content-Length declares" if declared else ""
            raise BodyIncomplete(
                f"the body stopped arriving after {received} bytes{expected}; "
                f"nothing more came in {BODY_IDLE_TIMEOUT_S} s"
            ) from None
        received += len(chunk)
        too_large = too_large or received > limit
        if not too_large:
            chunks.append(chunk)
        elif received > limit + DRAIN_LIMIT_BYTES:
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
    """200 while at least one model copy can serve; 503 while loading and once none can (hung or out
    of service), so SageMaker takes the instance out of the endpoint and replaces it."""
    health = request.app.state.server.health()
    if health is None:
        return error_response(error_kind(ModelNotReady()), "the model is loading", new_request_id())
    if health.can_serve:
        return Response(status_code=200)
    return error_response(error_kind(ModelUnhealthy()), health.describe(), new_request_id())


async def invoke(server: ModelServer, request: Request, request_id: str) -> Response:
    headers = request.headers
    context = server.accept(
        request_id,
        content_type=headers.get("content-type", ""),
        accept=headers.get("accept", ""),
        custom_attributes=headers.get(CUSTOM_ATTRIBUTES_HEADER, ""),
    )
    body = await read_body(request, server.settings)
    payload, response_type = await server.infer(body, context)
    return Response(payload, media_type=response_type, headers={REQUEST_ID_HEADER: request_id})


async def invocations(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    request_id = new_request_id()
    started = time.perf_counter()
    try:
        response = await invoke(server, request, request_id)
    except ClientDisconnect:
        # The caller gave up (e.g. the platform's own timeout) mid-body: nobody reads an answer.
        logger.info("request %s: client disconnected before sending its whole body", request_id)
        return Response(status_code=400)
    except ServingError as error:
        kind = error_kind(error)
        # Batch transform fails a whole input file on one non-200 record; answer a bad record with an
        # error object in its place instead (BATCH_RECORD_ERRORS=object).
        as_record = kind.record_error and server.settings.record_errors_as_objects
        response = error_response(
            kind, str(error), request_id, status=200 if as_record else None, retry_after_s=error.retry_after_s
        )
    except Exception:
        logger.exception("request %s failed with an internal error", request_id)
        response = internal_error_response(request_id)
    logger.info(
        "POST /invocations %s -> %d in %.0f ms (request %s)",
        media_type(request.headers.get("content-type")) or "-",
        response.status_code,
        (time.perf_counter() - started) * 1000,
        request_id,
    )
    return response


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
