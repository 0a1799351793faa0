"""The model server: loads the artifact into its model copies, says whether it can serve, and runs one
request's decode -> predict -> encode under the request's limits. It knows nothing of HTTP: `app.py`
maps requests and responses onto it (as KServe's model server is kept apart from its protocol).

Decoding and encoding run on codec threads, the inference on the first free model copy's thread,
so the event loop only reads bodies and writes responses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from inference_server import artifact
from inference_server.artifact_format import ArtifactError
from inference_server.content_types import negotiate
from inference_server.errors import ModelNotReady, RequestTimedOut
from inference_server.handlers import Handlers, RequestContext
from inference_server.mask_encoding import preload_encoders
from inference_server.model_pool import (
    CopyLoadFailed,
    Health,
    HealthPolicy,
    ModelCopy,
    ModelPool,
    QueuePolicy,
)
from inference_server.request_options import parse_options
from inference_server.settings import Settings

logger = logging.getLogger("inference_server")

# Decoding and encoding overlap with the copies' inferences, bounded so that a burst of large bodies
# cannot all be decoded into memory at once.
CODEC_THREADS_PER_COPY = 2
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

    @property
    def model_copies(self) -> int:
        return len(self.pool.copies) if self.pool is not None else 1

    def health(self) -> Health | None:
        """Which copies can serve now (what /ping answers); None while the model is loading."""
        return self.pool.health() if self.ready and self.pool is not None else None

    # Loading ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        try:
            await asyncio.to_thread(self._load_and_warm_up)
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
        self.ready = True

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

    def accept(
        self, request_id: str, content_type: str, accept: str, custom_attributes: str
    ) -> RequestContext:
        """The context of a new request, or the error that refuses it before its body is read: the
        model is not loaded, or the default encoder could not meet the Accept header or options."""
        if not self.ready or self.handlers is None:
            raise ModelNotReady("the model is still loading; retry when GET /ping returns 200")
        context = self.request_context(request_id, content_type, accept, custom_attributes)
        if self.handlers.default_output:
            # A user's output_fn may accept other formats and options: only ours are checked here.
            negotiate(context.accept)
            context.options = parse_options(context.custom_attributes)
        return context

    async def infer(self, body: bytes, context: RequestContext) -> tuple[bytes, str]:
        """decode -> predict -> encode: the response body and its content type."""
        if not self.ready or self.handlers is None or self.pool is None:
            raise ModelNotReady("the model is still loading; retry when GET /ping returns 200")
        handlers, pool = self.handlers, self.pool
        timeout_s = self.settings.request_timeout_s
        # Refused here, at once, when the queue ahead cannot be served within the request's limit.
        with pool.admit(context.request_id, timeout_s) as ticket:
            try:
                async with asyncio.timeout(timeout_s):
                    data = await self._on_codec_thread(handlers.decode, body, context)
                    prediction = await pool.run(ticket, lambda model: handlers.predict(data, model, context))
                    return await self._on_codec_thread(handlers.encode, prediction, context)
            except TimeoutError:
                raise RequestTimedOut(
                    f"the request took over {timeout_s} s (REQUEST_TIMEOUT_S) waiting for and running the "
                    "model"
                ) from None

    async def _on_codec_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Decoding and encoding never run on a model copy's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._codec_threads, function, *args)

    def close(self) -> None:
        # Queued inferences are dropped; running ones finish before the process exits.
        if self.pool is not None:
            self.pool.close()
        if self._codec_threads is not None:
            self._codec_threads.shutdown(wait=False, cancel_futures=True)
