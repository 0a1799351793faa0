"""The HTTP layer: SageMaker's routes over the one model copy that `ModelServer` owns.

    GET  /ping                  200 once the model is loaded and warmed up, 503 before
    POST /invocations           decode (codec thread) -> predict (model thread) -> encode (codec thread)
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
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_server import codecs
from inference_server.errors import (
    INTERNAL_ERROR,
    BodyIncomplete,
    ErrorKind,
    ModelNotReady,
    PayloadTooLarge,
    RequestTimedOut,
    ServingError,
    error_document,
    error_kind,
)
from inference_server.handlers import Handlers, RequestContext
from inference_server.settings import MIB, Settings

logger = logging.getLogger("inference_server")

CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
REQUEST_ID_HEADER = "X-Request-Id"
# Decoding and encoding overlap with another request's inference, bounded so that a burst of large
# bodies cannot all be decoded into memory at once.
CODEC_THREADS = 2
# After a body turns out too large, read and discard up to this much more before answering 413, so
# a client still sending gets the response instead of a connection reset.
DRAIN_LIMIT_BYTES = 64 * MIB
# A body that stops arriving this long before it is complete (a Content-Length larger than what the
# client sends) is answered 408 instead of holding the connection open for ever.
BODY_IDLE_TIMEOUT_S = 10
# A noise image of a typical photo size: the warm-up runs every stage of the model once.
WARMUP_SHAPE = (480, 640, 3)


class ModelServer:
    """Owns the loaded model, its readiness, and the threads that use it."""

    def __init__(self, settings: Settings, on_load_failure: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.on_load_failure = on_load_failure
        self.handlers: Handlers | None = None
        self.model: Any = None
        self.ready = False
        # One thread owns the model: it loads it, warms it up and runs every inference, so
        # concurrent requests queue to the single copy in arrival order.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._codec_threads = ThreadPoolExecutor(max_workers=CODEC_THREADS, thread_name_prefix="codec")

    async def load(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._model_thread, self._load_and_warm_up)
        except Exception:
            logger.exception("model failed to load from %s; stopping", self.settings.model_dir)
            self.on_load_failure()
            return
        self.ready = True

    def _load_and_warm_up(self) -> None:
        from inference_server import artifact  # the ML stack loads here, after the port is bound

        started = time.perf_counter()
        codecs.preload_encoders()
        handlers = Handlers.compose(artifact.load_user_module(self.settings.model_dir))
        if handlers.overridden:
            logger.info("code/inference.py overrides %s", ", ".join(sorted(handlers.overridden)))
        model = handlers.load_model(self.settings.model_dir)
        loaded = time.perf_counter()
        if "input_fn" in handlers.overridden:
            # Only the user's input_fn knows what its predict_fn expects.
            logger.info("warm-up skipped: a custom input_fn defines the model's input")
        else:
            context = self.request_context("warm-up", {}, model)
            handlers.predict(
                np.random.default_rng(0).integers(0, 256, WARMUP_SHAPE, np.uint8), model, context
            )
        self.handlers, self.model = handlers, model
        logger.info(
            "model loaded from %s in %.2f s, warmed up in %.2f s; %s mode, request limit %d bytes, "
            "timeout %d s, max image pixels %d",
            self.settings.model_dir,
            loaded - started,
            time.perf_counter() - loaded,
            self.settings.mode,
            self.settings.max_request_bytes,
            self.settings.request_timeout_s,
            self.settings.max_image_pixels,
        )

    def request_context(self, request_id: str, headers: Any, model: Any) -> RequestContext:
        return RequestContext(
            request_id=request_id,
            content_type=headers.get("content-type", ""),
            accept=headers.get("accept", ""),
            custom_attributes=headers.get(CUSTOM_ATTRIBUTES_HEADER, ""),
            max_image_pixels=self.settings.max_image_pixels,
            input_format=getattr(model, "input_format", "BGR"),
            class_names=tuple(getattr(model, "class_names", ())),
        )

    async def invoke(self, request: Request, request_id: str) -> Response:
        if not self.ready or self.handlers is None:
            raise ModelNotReady("the model is still loading; retry when GET /ping returns 200")
        handlers = self.handlers
        context = self.request_context(request_id, request.headers, self.model)
        if handlers.default_output:
            # Fail fast, before reading the body, on what the default encoder would reject anyway.
            codecs.negotiate(context.accept)
            context.options = codecs.parse_options(context.custom_attributes)
        body = await read_body(request, self.settings)
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                data = await self._run(self._codec_threads, handlers.decode, body, context)
                prediction = await self._run(self._model_thread, handlers.predict, data, self.model, context)
                payload, response_type = await self._run(
                    self._codec_threads, handlers.encode, prediction, context
                )
        except TimeoutError:
            raise RequestTimedOut(
                f"the request took over {self.settings.request_timeout_s} s (REQUEST_TIMEOUT_S) "
                "waiting for and running the model"
            ) from None
        return Response(payload, media_type=response_type)

    @staticmethod
    async def _run(executor: Executor, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    def close(self) -> None:
        # Queued inferences are dropped; a running one finishes before the process exits.
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        self._codec_threads.shutdown(wait=False, cancel_futures=True)


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


def error_response(kind: ErrorKind, message: str, request_id: str, status: int | None = None) -> JSONResponse:
    return JSONResponse(
        error_document(kind, message, request_id),
        status_code=kind.status if status is None else status,
        headers={REQUEST_ID_HEADER: request_id},
    )


def internal_error_response(request_id: str) -> JSONResponse:
    # No exception text: it can leak paths and data, and the log has the full traceback.
    message = f"internal error; the server log has the details under request id {request_id}"
    return error_response(INTERNAL_ERROR, message, request_id)


def new_request_id() -> str:
    return uuid.uuid4().hex


async def ping(request: Request) -> Response:
    if request.app.state.server.ready:
        return Response(status_code=200)
    return error_response(error_kind(ModelNotReady()), "the model is loading", new_request_id())


async def invocations(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    request_id = new_request_id()
    started = time.perf_counter()
    try:
        response = await server.invoke(request, request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
    except ClientDisconnect:
        # The caller gave up (e.g. the platform's own timeout) mid-body: nobody reads an answer.
        logger.info("request %s: client disconnected before sending its whole body", request_id)
        return Response(status_code=400)
    except ServingError as error:
        kind = error_kind(error)
        # Batch transform fails a whole input file on one non-200 record; answer a bad record with an
        # error object in its place instead (BATCH_RECORD_ERRORS=object).
        as_record = kind.record_error and server.settings.record_errors_as_objects
        response = error_response(kind, str(error), request_id, status=200 if as_record else None)
    except Exception:
        logger.exception("request %s failed with an internal error", request_id)
        response = internal_error_response(request_id)
    logger.info(
        "POST /invocations %s -> %d in %.0f ms (request %s)",
        codecs.media_type(request.headers.get("content-type")) or "-",
        response.status_code,
        (time.perf_counter() - started) * 1000,
        request_id,
    )
    return response


async def execution_parameters(request: Request) -> Response:
    return JSONResponse(request.app.state.server.settings.execution_parameters())


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
