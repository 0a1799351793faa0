"""The model server: loads the artifact into its model copies, says whether it can serve, and runs one
request's decode -> predict -> encode under the request's limits. It knows nothing of HTTP: `app.py`
maps requests and responses onto it (as KServe's model server is kept apart from its protocol).

Decoding and encoding run on codec threads, the inference on the first free model copy's thread,
so the event loop only reads bodies and writes responses. Every thread that runs user code is a
daemon thread, and the model loads on one too: nothing a handler does can keep the process from
exiting.

Shutdown (SIGTERM): nothing new is admitted (503 shutting_down); requests waiting for a copy that
cannot finish within the grace period are answered 503 shutting_down at once, and whatever is still
unanswered at the end of the grace period is answered so then: every caller gets a JSON answer with
its request id, and each such request is logged as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference_server import artifact, memory
from inference_server.artifact_format import ArtifactError
from inference_server.content_types import negotiate
from inference_server.errors import ModelNotReady, RequestTimedOut, ShuttingDown
from inference_server.handlers import Handlers, RequestContext
from inference_server.mask_encoding import preload_encoders
from inference_server.model_pool import (
    CopyLoadFailed,
    Health,
    HealthPolicy,
    ModelCopy,
    ModelPool,
    QueuePolicy,
    Ticket,
    whole_seconds,
)
from inference_server.request_options import parse_options
from inference_server.settings import CpuRuntime, Settings
from inference_server.threads import DaemonThreadPool, on_daemon_thread

logger = logging.getLogger("inference_server")

# Decoding and encoding overlap with the copies' inferences, bounded so that a burst of large bodies
# cannot all be decoded into memory at once.
CODEC_THREADS_PER_COPY = 2
# A noise image of a typical photo size: the warm-up runs every stage of the model once.
WARMUP_SHAPE = (480, 640, 3)
# What a caller refused during shutdown is told: retry at once (SageMaker routes it to another
# instance; this one is going away).
SHUTDOWN_RETRY_AFTER_S = 1


class Stage:
    READING = "reading the body"
    DISPATCHING = "about to be decoded"
    DECODING = "decoding"
    QUEUED = "queued"
    RUNNING = "running on a model copy"
    ENCODING = "encoding"
    DONE = "answered"


# The stages in which a request has not reached a model copy yet: cancelling it wastes no inference.
WAITING_STAGES = (Stage.READING, Stage.DISPATCHING, Stage.DECODING, Stage.QUEUED)


@dataclass(eq=False)
class RequestTrace:
    """One request in flight: where it is, how long each step took, and why it was cancelled (if it
    was). The stage is set by whichever thread runs the step."""

    request_id: str
    received: float = field(default_factory=time.monotonic)
    stage: str = Stage.READING
    bytes_in: int = 0
    decode_s: float | None = None
    queue_wait_s: float | None = None
    model_s: float | None = None
    encode_s: float | None = None
    ticket: Ticket | None = None
    task: asyncio.Task | None = None
    # Set before the request's task is cancelled: the answer the caller gets instead.
    cancelled_because: ShuttingDown | None = None
    client_gone: bool = False

    def cancel(self, reason: ShuttingDown) -> None:
        if self.task is None or self.task.done() or self.cancelled_because is not None:
            return
        self.cancelled_because = reason
        if self.ticket is not None:
            self.ticket.cancelled_because = "cancelled by the shutdown"
        self.task.cancel()

    def timings_ms(self) -> dict[str, float | None]:
        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 1)

        return {
            "decode_ms": ms(self.decode_s),
            "queue_wait_ms": ms(self.queue_wait_s),
            "model_ms": ms(self.model_s),
            "encode_ms": ms(self.encode_s),
        }


class ModelServer:
    """Owns the model copies (through the pool that queues requests to them) and their readiness."""

    def __init__(self, settings: Settings, on_load_failure: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.on_load_failure = on_load_failure
        self.handlers: Handlers | None = None
        self.pool: ModelPool | None = None
        self.ready = False
        self.stopping = False
        self._codec_threads: DaemonThreadPool | None = None  # sized by the number of copies
        self._in_flight: dict[str, RequestTrace] = {}  # in arrival order
        self._shutdown_timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the event loop serving, once started
        # What admitted requests may hold in memory together; None where the container's memory
        # cannot be read (not Linux): no memory admission then.
        self.memory_budget: memory.MemoryBudget | None = None
        self.memory_model: memory.MemoryModel = memory.DEFAULT_MEMORY

    @property
    def model(self) -> Any:
        """The first copy's model: what every copy shares (channel order, class names)."""
        return self.pool.copies[0].model if self.pool is not None else None

    @property
    def model_copies(self) -> int:
        return len(self.pool.copies) if self.pool is not None else 1

    def health(self) -> Health | None:
        """Which copies can serve now (what /ping answers); None while the model is loading."""
        return self.pool.health() if self.ready and self.pool is not None else None

    # Loading ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            # A daemon thread, not asyncio's executor: a SIGTERM during a long (or hung) load must
            # not wait for it, and the default executor is waited for when the loop closes.
            await on_daemon_thread(self._load_and_warm_up, name="model-loader")
        except CopyLoadFailed as error:
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
        if self.stopping:
            return  # loaded after SIGTERM: never reported ready
        self.ready = True

    def _apply_cpu_runtime(self, copy: ModelCopy) -> None:
        if self.settings.cpu_runtime is CpuRuntime.EAGER:
            return
        if not copy.device.startswith("cpu"):
            logger.warning(
                "CPU_RUNTIME=%s applies to CPU copies only; %s runs torch",
                self.settings.cpu_runtime,
                copy.device,
            )
            return
        from inference_server import cpu_runtime

        cpu_runtime.apply(
            copy.model,
            self.settings.model_dir,
            self.settings.cpu_precision,
            self.settings.cpu_runtime_cache_dir,
        )

    def _load_and_warm_up(self) -> None:
        # devices imports torch, the heaviest part of the ML stack: imported here, on the loading
        # thread after the port is bound, so /ping answers 503 within moments of the process starting.
        from inference_server import devices

        started = time.perf_counter()
        preload_encoders()
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
            self._apply_cpu_runtime(copy)
            loaded = time.perf_counter()
            if "input_fn" in handlers.overridden:
                # Only the user's input_fn knows what its predict_fn expects.
                logger.info("%s: warm-up skipped: a custom input_fn defines the model's input", copy.name)
                return 0.0
            context = self.request_context("warm-up", model=copy.model)
            image = np.random.default_rng(0).integers(0, 256, WARMUP_SHAPE, np.uint8)
            with copy.precision():
                handlers.predict(image, copy.model, context)
            warm_up_s = time.perf_counter() - loaded
            logger.info(
                "%s loaded in %.2f s, warmed up in %.2f s", copy.name, loaded - copy_started, warm_up_s
            )
            return warm_up_s

        pool.load(load_copy)
        self._codec_threads = DaemonThreadPool(CODEC_THREADS_PER_COPY * len(pool.copies), "codec")
        self.memory_model = memory.memory_model(pool.copies[0].model)
        self.memory_budget = self._memory_budget(len(pool.copies))
        self.handlers, self.pool = handlers, pool
        logger.info(
            "model loaded from %s in %.2f s: %d cop%s (%s), mixed precision %s, cpu runtime %s; %s mode, "
            "request limit %d bytes, timeout %d s, max image pixels %d, heap policy %s, %s",
            self.settings.model_dir,
            time.perf_counter() - started,
            len(pool.copies),
            "y" if len(pool.copies) == 1 else "ies",
            ", ".join(copy.device for copy in pool.copies),
            self.settings.mixed_precision,
            self.settings.cpu_runtime
            if self.settings.cpu_runtime is CpuRuntime.EAGER
            else f"{self.settings.cpu_runtime} {self.settings.cpu_precision}",
            self.settings.mode,
            self.settings.max_request_bytes,
            self.settings.request_timeout_s,
            self.settings.max_image_pixels,
            self.settings.heap_policy,
            f"refusing what cannot finish in time, max queue depth {policy.max_queue_depth}"
            if policy.refuse_late
            else "no queue limit",
        )

    def _memory_budget(self, copies: int) -> memory.MemoryBudget | None:
        """The budget from the container's memory, less what the loaded, warmed-up copies hold."""
        limit = memory.container_memory(self.settings.memory_limit_mb)
        idle = memory.resident_bytes()
        if limit is None or idle is None:
            logger.warning("the container's memory cannot be read here: no memory admission")
            return None
        budget = memory.MemoryBudget(
            limit, idle, copies, refuse_when_full=self.settings.refuses_late_requests
        )
        model = self.memory_model
        # The largest image the pixel limit lets through, as a square, to say whether it fits.
        side = math.isqrt(self.settings.max_image_pixels)
        largest = model.estimate(side, side).total
        logger.info(
            "memory: %s; one request at %d/%d px and %d detections needs about %.0f MiB for a 12 MP "
            "image, %.0f MiB at MAX_IMAGE_PIXELS",
            budget.describe(),
            model.min_size,
            model.max_size,
            model.max_detections,
            model.estimate(4242, 2828).total / memory.MIB,
            largest / memory.MIB,
        )
        if budget.available <= 0:
            logger.error(
                "memory: the loaded model holds %.0f MiB of the %s limit: every image will be refused "
                "413 insufficient_memory",
                idle / memory.MIB,
                limit.describe(),
            )
        return budget

    # Requests --------------------------------------------------------------------------------------

    def request_context(
        self,
        request_id: str,
        content_type: str = "",
        accept: str = "",
        custom_attributes: str = "",
        model: Any = None,
    ) -> RequestContext:
        model = self.model if model is None else model
        return RequestContext(
            request_id=request_id,
            content_type=content_type,
            accept=accept,
            custom_attributes=custom_attributes,
            max_image_pixels=self.settings.max_image_pixels,
            input_format=getattr(model, "input_format", "BGR"),
            class_names=tuple(getattr(model, "class_names", ())),
        )

    def _check_serving(self) -> None:
        if self.stopping:
            raise ShuttingDown(
                "the server is shutting down (SIGTERM); retry: another instance will answer",
                retry_after_s=SHUTDOWN_RETRY_AFTER_S,
            )
        if not self.ready or self.handlers is None:
            raise ModelNotReady("the model is still loading; retry when GET /ping returns 200")

    def accept(
        self, request_id: str, content_type: str, accept: str, custom_attributes: str
    ) -> RequestContext:
        """The context of a new request, or the error that refuses it before its body is read: the
        server is stopping, the model is not loaded, or the default encoder could not meet the Accept
        header or options."""
        self._check_serving()
        assert self.handlers is not None
        context = self.request_context(request_id, content_type, accept, custom_attributes)
        if self.handlers.default_output:
            # A user's output_fn may accept other formats and options: only ours are checked here.
            negotiate(context.accept)
            context.options = parse_options(context.custom_attributes)
        return context

    @contextlib.contextmanager
    def track(self, trace: RequestTrace) -> Iterator[RequestTrace]:
        """Count the request as in flight (for the shutdown) while the calling task handles it."""
        trace.task = asyncio.current_task()
        self._in_flight[trace.request_id] = trace
        try:
            yield trace
        finally:
            trace.stage = Stage.DONE
            self._in_flight.pop(trace.request_id, None)

    async def infer(self, body: bytes, context: RequestContext, trace: RequestTrace) -> tuple[bytes, str]:
        """decode -> predict -> encode: the response body and its content type."""
        self._check_serving()
        handlers, pool = self.handlers, self.pool
        assert handlers is not None and pool is not None
        timeout_s = self.settings.request_timeout_s
        budget = self.memory_budget
        held = memory.RequestMemory(budget) if budget is not None else None
        # Refused here, at once, when the queue ahead cannot be served within the request's limit.
        with pool.admit(context.request_id, timeout_s) as ticket, contextlib.ExitStack() as release:
            trace.ticket = ticket
            if held is not None:
                release.callback(held.close)

                def reserve(width: int, height: int) -> None:  # on a codec thread, from the image header
                    assert held is not None
                    held.reserve(
                        self.memory_model.estimate(width, height, len(body)),
                        f"image {width}x{height}",
                        ticket.deadline,
                        retry_after_s=whole_seconds(pool.estimate.likely_max),
                    )

                context.on_image_size = reserve
            if trace.client_gone:
                ticket.abandoned.set()

            def predict(model: Any) -> Any:  # on the copy's thread
                started = time.monotonic()
                trace.queue_wait_s, trace.stage = started - queued, Stage.RUNNING
                try:
                    return handlers.predict(data, model, context)
                finally:
                    trace.model_s = time.monotonic() - started

            try:
                async with asyncio.timeout(timeout_s):
                    trace.stage, started = Stage.DECODING, time.monotonic()
                    data = await self._on_codec_thread(handlers.decode, body, context)
                    trace.decode_s = time.monotonic() - started
                    shape = _image_shape(data)
                    if held is not None and held.reservation is None and shape is not None:
                        # A user's input_fn decoded it without the size check: budgeted now, still
                        # before it runs.
                        await self._on_codec_thread(reserve, shape[1], shape[0])
                    trace.stage, queued = Stage.QUEUED, time.monotonic()
                    logger.debug(
                        "request %s: decoded in %.0f ms, queued for a model copy",
                        context.request_id,
                        trace.decode_s * 1000,
                        extra={"request_id": context.request_id, "stage": "queued"},
                    )
                    prediction = await pool.run(ticket, predict)
                    trace.stage, started = Stage.ENCODING, time.monotonic()
                    result = await self._on_codec_thread(handlers.encode, prediction, context)
                    trace.encode_s = time.monotonic() - started
                    return result
            except TimeoutError:
                raise RequestTimedOut(
                    f"the request took over {timeout_s} s (REQUEST_TIMEOUT_S) waiting for and running the "
                    "model"
                ) from None

    def client_disconnected(self, trace: RequestTrace, *, interrupt: bool = True) -> None:
        """The caller hung up: its request is never started (the copy checks the ticket before it
        starts one; one still queued leaves the queue at once). With interrupt, the request's task is
        cancelled wherever it waits."""
        trace.client_gone = True
        if trace.ticket is not None:
            trace.ticket.abandoned.set()
            trace.ticket.cancelled_because = "client disconnected"
        if interrupt and trace.task is not None and not trace.task.done() and trace.stage != Stage.DONE:
            trace.task.cancel()

    async def _on_codec_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Decoding and encoding never run on a model copy's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._codec_threads, function, *args)

    # Shutdown --------------------------------------------------------------------------------------

    def begin_shutdown(self, grace_s: float) -> None:
        """SIGTERM: admit nothing more; answer now what cannot finish within grace_s, and at grace_s
        whatever is still unanswered."""
        if self.stopping:
            return
        self.stopping = True
        self.ready = False
        waiting = [trace for trace in self._in_flight.values() if trace.stage in WAITING_STAGES]
        running = len(self._in_flight) - len(waiting)
        logger.info(
            "SIGTERM: admitting nothing more; %d request(s) in flight, %d of them not yet on a model copy; "
            "what is unanswered in %.0f s is answered 503 shutting_down",
            len(self._in_flight),
            len(waiting),
            grace_s,
        )
        if self.pool is not None:
            copies = len(self.pool.copies)
            estimate = self.pool.estimate.likely_max
            for position, trace in enumerate(waiting):
                # Each copy finishes what it runs (at most one estimate), then the waiting requests in
                # order, one estimate each.
                finishes_in = (math.floor((running + position) / copies) + 1) * estimate
                if finishes_in > grace_s:
                    trace.cancel(self._shutdown_error(f"it would finish in about {finishes_in:.0f} s"))
        self._shutdown_timer = asyncio.get_running_loop().call_later(grace_s, self._answer_the_rest, grace_s)

    def _answer_the_rest(self, grace_s: float) -> None:
        for trace in list(self._in_flight.values()):
            trace.cancel(self._shutdown_error(f"it was still {trace.stage} after {grace_s:.0f} s"))

    @staticmethod
    def _shutdown_error(why: str) -> ShuttingDown:
        return ShuttingDown(
            f"the server is shutting down (SIGTERM) and cannot finish this request within its grace period "
            f"({why}); retry: another instance will answer",
            retry_after_s=SHUTDOWN_RETRY_AFTER_S,
        )

    def close(self) -> None:
        # Queued inferences are dropped; running ones are abandoned with their daemon threads.
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
        if self.pool is not None:
            self.pool.close()
        if self._codec_threads is not None:
            self._codec_threads.shutdown(wait=False, cancel_futures=True)


def _image_shape(data: Any) -> tuple[int, int] | None:
    """(height, width) of an HW or HWC array; None for anything else a user's input_fn returns."""
    shape = getattr(data, "shape", None)
    if isinstance(shape, tuple) and len(shape) in (2, 3) and all(isinstance(n, int) and n > 0 for n in shape):
        return shape[0], shape[1]
    return None
