"""The HTTP layer: SageMaker's routes over the model copies that `ModelServer` owns.

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
from concurrent.futures import ThreadPoolExecutor
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
    ModelUnhealthy,
    PayloadTooLarge,
    RequestTimedOut,
    ServingError,
    error_document,
    error_kind,
)
from inference_server.handlers import Handlers, RequestContext
from inference_server.model_pool import CopyLoadFailed, HealthPolicy, ModelCopy, ModelPool, QueuePolicy
from inference_server.settings import MIB, Settings

logger = logging.getLogger("inference_server")

CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
REQUEST_ID_HEADER = "X-Request-Id"
# Decoding and encoding overlap with the copies' inferences, bounded so that a burst of large bodies
# cannot all be decoded into memory at once.
CODEC_THREADS_PER_COPY = 2
# After a body turns out too large, read and discard up to this much more before answering 413, so
# a client still sending gets the response instead of a connection reset.
DRAIN_LIMIT_BYTES = 64 * MIB
# A body that stops arriving this long before it is complete (a Content-Length larger than what the
# client sends) is answered 408 instead of holding the connection open for ever.
BODY_IDLE_TIMEOUT_S = 10
# A noise image of a typical photo size: the warm-up runs every stage of the model once.
WARMUP_SHAPE = (480, 640, 3)


class ModelServer:
    """Owns the model copies (through the pool that queues requests to them) and their readiness."""

    def __init__(self, settings: Settings, on_load_failure: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.on_load_failure = on_load_failure
        self.handlers: Handlers | None = None
        self.pool: ModelPool | None = None
        self.ready = False
        self._codec_threads: ThreadPoolExecutor | None = None  # sized by the number of copies

    @property
    def model(self) -> Any:
        """The first copy's model: what every copy shares (channel order, class names)."""
        return self.pool.copies[0].model if self.pool is not None else None

    async def load(self) -> None:
        try:
            await asyncio.to_thread(self._load_and_warm_up)
        except CopyLoadFailed as error:
            from inference_server.artifact import ArtifactError  # imported by the load

            # One line naming the copy and its device; a traceback only for what the artifact
            # checks did not already explain (e.g. a fault in a user's model_fn).
            cause = error.__cause__
            logger.error(
                "model failed to load from %s: %s; stopping",
                self.settings.model_dir,
                error,
                exc_info=None if isinstance(cause, ArtifactError) else cause,
            )
            self.on_load_failure()
            return
        except Exception:
            logger.exception("model failed to load from %s; stopping", self.settings.model_dir)
            self.on_load_failure()
            return
        self.ready = True

    def _load_and_warm_up(self) -> None:
        # The ML stack loads here, after the port is bound.
        from inference_server import artifact, devices

        started = time.perf_counter()
        codecs.preload_encoders()
        handlers = Handlers.compose(artifact.load_user_module(self.settings.model_dir))
        if handlers.overridden:
            logger.info("code/inference.py overrides %s", ", ".join(sorted(handlers.overridden)))
        policy = QueuePolicy(
            refuse_late=self.settings.refuses_late_requests,
            max_queue_depth=self.settings.max_queue_depth if self.settings.refuses_late_requests else None,
        )
        health_policy = HealthPolicy.for_timeout(
            self.settings.request_timeout_s, self.settings.unhealthy_after_errors or None
        )
        pool = ModelPool(devices.plan(self.settings.model_copies), policy, health_policy)

        def load_copy(copy: ModelCopy) -> float:
            copy_started = time.perf_counter()
            devices.bind(copy.device)
            copy.precision = devices.precision(copy.device, self.settings.mixed_precision)
            copy.model = handlers.load_model(self.settings.model_dir)
            loaded = time.perf_counter()
            if "input_fn" in handlers.overridden:
                # Only the user's input_fn knows what its predict_fn expects.
                logger.info("%s: warm-up skipped: a custom input_fn defines the model's input", copy.name)
                return 0.0
            context = self.request_context("warm-up", {}, copy.model)
            image = np.random.default_rng(0).integers(0, 256, WARMUP_SHAPE, np.uint8)
            with copy.precision():
                handlers.predict(image, copy.model, context)
            warm_up_s = time.perf_counter() - loaded
            logger.info(
                "%s loaded in %.2f s, warmed up in %.2f s", copy.name, loaded - copy_started, warm_up_s
            )
            return warm_up_s

        pool.load(load_copy)
        self._codec_threads = ThreadPoolExecutor(
            max_workers=CODEC_THREADS_PER_COPY * len(pool.copies), thread_name_prefix="codec"
        )
        self.handlers, self.pool = handlers, pool
        logger.info(
            "model loaded from %s in %.2f s: %d cop%s (%s), mixed precision %s; %s mode, request limit "
            "%d bytes, timeout %d s, max image pixels %d, heap policy %s, %s",
            self.settings.model_dir,
            time.perf_counter() - started,
            len(pool.copies),
            "y" if len(pool.copies) == 1 else "ies",
            ", ".join(copy.device for copy in pool.copies),
            self.settings.mixed_precision,
            self.settings.mode,
            self.settings.max_request_bytes,
            self.settings.request_timeout_s,
            self.settings.max_image_pixels,
            self.settings.heap_policy,
            f"refusing what cannot finish in time, max queue depth {policy.max_queue_depth}"
            if policy.refuse_late
            else "no queue limit",
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

    @property
    def model_copies(self) -> int:
        return len(self.pool.copies) if self.pool is not None else 1

    async def invoke(self, request: Request, request_id: str) -> Response:
        if not self.ready or self.handlers is None or self.pool is None:
            raise ModelNotReady("the model is still loading; retry when GET /ping returns 200")
        handlers, pool = self.handlers, self.pool
        context = self.request_context(request_id, request.headers, self.model)
        if handlers.default_output:
            # Fail fast, before reading the body, on what the default encoder would reject anyway.
            codecs.negotiate(context.accept)
            context.options = codecs.parse_options(context.custom_attributes)
        body = await read_body(request, self.settings)
        timeout_s = self.settings.request_timeout_s
        # Refused here, at once, when the queue ahead cannot be served within the request's limit.
        with pool.admit(request_id, timeout_s) as ticket:
            try:
                async with asyncio.timeout(timeout_s):
                    data = await self._on_codec_thread(handlers.decode, body, context)
                    prediction = await pool.run(ticket, lambda model: handlers.predict(data, model, context))
                    payload, response_type = await self._on_codec_thread(handlers.encode, prediction, context)
            except TimeoutError:
                raise RequestTimedOut(
                    f"the request took over {timeout_s} s (REQUEST_TIMEOUT_S) waiting for and running the "
                    "model"
                ) from None
        return Response(payload, media_type=response_type)

    async def _on_codec_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Decoding and encoding never run on a model copy's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._codec_threads, function, *args)

    def close(self) -> None:
        # Queued inferences are dropped; running ones finish before the process exits.
        if self.pool is not None:
            self.pool.close()
        if self._codec_threads is not None:
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
    server: ModelServer = request.app.state.server
    if not server.ready or server.pool is None:
        return error_response(error_kind(ModelNotReady()), "the model is loading", new_request_id())
    health = server.pool.health()
    if health.can_serve:
        return Response(status_code=200)
    return error_response(error_kind(ModelUnhealthy()), health.describe(), new_request_id())


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
        response = error_response(
            kind, str(error), request_id, status=200 if as_record else None, retry_after_s=error.retry_after_s
        )
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
