"""The model copies and the one queue that feeds them: admission, deadlines and refusal.

One copy per device (`devices.plan`), each loaded, warmed up and run by its own thread; every
request waits in one queue and goes to whichever copy is free first, so K requests on N copies take
about ceil(K/N) model times.

The overload policy follows Triton's queue policy (max queue size, a per-request timeout, reject
rather than delay) with the model time known: the pool keeps a moving estimate of one inference and
knows what every copy is doing, so

- a request that cannot finish before its deadline, given the queue ahead of it, is refused at
  admission, at once, with the seconds after which it would fit (`Overloaded`, 503 + Retry-After);
- a queued request whose deadline passes is removed from the queue and never computed;
- a copy that becomes free never starts a request that cannot finish in its remaining time, nor one
  whose caller has disconnected (its ticket says so).

An idle copy with nothing queued always takes a request, so a stale estimate corrects itself.

Async and batch modes keep their long queues: no refusal, no depth limit, only the mode's timeout.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from inference_server.errors import Overloaded, RequestTimedOut, first_line

logger = logging.getLogger("inference_server")

# Weight of the newest inference in the moving estimate: about the last ten inferences count.
ESTIMATE_WEIGHT = 0.2


@dataclass(frozen=True)
class QueuePolicy:
    refuse_late: bool  # refuse at admission what cannot finish in time (real-time and serverless)
    max_queue_depth: int | None  # admitted requests waiting for a copy; None: no limit


@dataclass(eq=False)
class ModelCopy:
    index: int
    device: str  # "cpu", "cuda:0", ...
    model: Any = None
    # What each inference on this copy runs inside (torch.autocast with MIXED_PRECISION).
    precision: Callable[[], AbstractContextManager] = nullcontext
    busy_since: float | None = None
    inferences: int = 0

    @property
    def name(self) -> str:
        return f"model copy {self.index + 1} ({self.device})"


class CopyLoadFailed(Exception):
    """A copy did not load or warm up; the message is one line naming its device."""


class MovingEstimate:
    """Exponentially weighted mean and mean deviation of inference seconds, seeded by the warm-up.

    As TCP estimates its retransmission timeout (Jacobson/Karels): `seconds` is the expected time of
    one inference; `likely_max` (mean + 2 deviations) is what "can it still finish in time" is
    checked against, so a machine whose inference time varies does not start work it cannot finish.
    """

    def __init__(self) -> None:
        self.seconds: float | None = None
        self.deviation = 0.0

    def add(self, seconds: float) -> None:
        if self.seconds is None:
            self.seconds = seconds
            return
        self.deviation += ESTIMATE_WEIGHT * (abs(seconds - self.seconds) - self.deviation)
        self.seconds += ESTIMATE_WEIGHT * (seconds - self.seconds)

    @property
    def likely_max(self) -> float:
        return (self.seconds or 0.0) + 2 * self.deviation


def expected_start(busy_for: list[float], waiting: int, estimate: float) -> float:
    """Seconds until a copy is free for a request that queues behind `waiting` others.

    busy_for has one entry per copy: the seconds its current inference still needs (0 when idle).
    Each waiting request takes the copy that frees first and holds it for one estimate.
    """
    free_at = list(busy_for)
    heapq.heapify(free_at)
    for _ in range(waiting):
        heapq.heappush(free_at, heapq.heappop(free_at) + estimate)
    return free_at[0]


@dataclass(eq=False)
class Ticket:
    """An admitted request: counted in the queue from admission until a copy takes it."""

    request_id: str
    timeout_s: float
    deadline: float  # time.monotonic()
    queued: bool = False
    released: bool = False
    # Set (from any thread) when the caller has disconnected: the request is never started.
    abandoned: threading.Event = field(default_factory=threading.Event)
    # Why a cancelled request left the queue, for the log: its own deadline, unless the server says.
    cancelled_because: str = "deadline passed"


@dataclass(eq=False)
class _Job:
    ticket: Ticket
    function: Callable[[Any], Any]  # called with the copy's model
    future: Future = field(default_factory=Future)


class ModelPool:
    def __init__(self, devices: list[str], policy: QueuePolicy) -> None:
        self.copies = [ModelCopy(index, device) for index, device in enumerate(devices)]
        self.policy = policy
        self.estimate = MovingEstimate()
        self.dropped = 0  # admitted requests that were never computed because their deadline came first
        self.refused = 0
        self.abandoned = 0  # admitted requests never computed because their caller disconnected first
        self._changed = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._admitted = 0  # admitted but not yet queued (still decoding)
        self._closed = False

    # Start-up --------------------------------------------------------------------------------------

    def load(self, load_copy: Callable[[ModelCopy], float]) -> None:
        """Load every copy at once, each on its own thread, which then serves the queue.

        load_copy fills in the copy and returns the seconds its warm-up inference took (or 0).
        Raises CopyLoadFailed for the first copy (in device order) that failed.
        """
        loaded: list[Future] = []
        for copy in self.copies:
            done: Future = Future()
            thread = threading.Thread(
                target=self._serve, args=(copy, load_copy, done), name=f"model-{copy.index}", daemon=True
            )
            thread.start()
            loaded.append(done)
        failures = []
        for copy, done in zip(self.copies, loaded, strict=True):
            try:
                warm_up_s = done.result()
            except Exception as error:
                failures.append((copy, error))
                continue
            if warm_up_s:
                self.estimate.add(warm_up_s)
        if failures:
            self.close()
            failed_copy, failure = failures[0]
            raise CopyLoadFailed(
                f"{failed_copy.name} of {len(self.copies)} failed to load: {first_line(failure)}"
            ) from failure

    def _serve(self, copy: ModelCopy, load_copy: Callable[[ModelCopy], float], loaded: Future) -> None:
        try:
            loaded.set_result(load_copy(copy))
        except BaseException as error:
            loaded.set_exception(error)
            return
        while (job := self._next_job(copy)) is not None:
            self._run_job(copy, job)
            del job  # the answered request's prediction is not kept while the copy waits for the next

    def _run_job(self, copy: ModelCopy, job: _Job) -> None:
        started = time.monotonic()
        try:
            with copy.precision():
                result = job.function(copy.model)
        except BaseException as error:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
            with self._changed:
                self.estimate.add(time.monotonic() - started)
        finally:
            with self._changed:
                copy.busy_since = None
                copy.inferences += 1

    # Admission -------------------------------------------------------------------------------------

    @contextmanager
    def admit(self, request_id: str, timeout_s: float) -> Iterator[Ticket]:
        """Admit a request or raise Overloaded at once; the ticket holds its place until it runs."""
        now = time.monotonic()
        with self._changed:
            self._check_capacity(now, timeout_s)
            self._admitted += 1
        ticket = Ticket(request_id, timeout_s, deadline=now + timeout_s)
        try:
            yield ticket
        finally:
            self._release(ticket)

    def _check_capacity(self, now: float, timeout_s: float) -> None:
        waiting = len(self._queue) + self._admitted
        depth = self.policy.max_queue_depth
        estimate = self.estimate.seconds or 0.0
        if depth is not None and waiting >= depth:
            self.refused += 1
            # Every copy must finish the requests above the limit before this one fits.
            over = waiting - depth + 1
            raise Overloaded(
                f"{waiting} requests are already waiting for the model (MAX_QUEUE_DEPTH={depth})",
                retry_after_s=_whole_seconds(math.ceil(over / len(self.copies)) * estimate),
            )
        busy_for = self._busy_for(now, estimate)
        if not self.policy.refuse_late or (waiting == 0 and not self._all_busy()):
            # An idle copy always takes the request: running it is also how a stale estimate (say,
            # one slow outlier) gets corrected, so the server can never refuse everything forever.
            return
        start = expected_start(busy_for, waiting, estimate)
        if start + self.estimate.likely_max > timeout_s:
            self.refused += 1
            raise Overloaded(
                f"the model is busy: with {waiting} requests waiting, this one would start in about "
                f"{start:.1f} s and finish after its {timeout_s:g} s limit (REQUEST_TIMEOUT_S)",
                retry_after_s=_whole_seconds(start + self.estimate.likely_max - timeout_s),
            )

    def _all_busy(self) -> bool:
        return all(copy.busy_since is not None for copy in self.copies)

    def _busy_for(self, now: float, estimate: float) -> list[float]:
        return [
            0.0 if copy.busy_since is None else max(0.0, estimate - (now - copy.busy_since))
            for copy in self.copies
        ]

    def _release(self, ticket: Ticket) -> None:
        with self._changed:
            if not ticket.queued and not ticket.released:
                self._admitted -= 1
            ticket.released = True

    # Dispatch --------------------------------------------------------------------------------------

    async def run(self, ticket: Ticket, function: Callable[[Any], Any]) -> Any:
        """function(model) on the first free copy. Cancelling the await (the request's own timeout)
        takes a still-queued request out of the queue: it is never computed."""
        job = _Job(ticket, function)
        with self._changed:
            self._admitted -= 1
            ticket.queued = True
            if self._closed:
                raise RuntimeError("the model pool is closed")
            self._queue.append(job)
            self._changed.notify()
        job.future.add_done_callback(self._forget_if_cancelled(job))
        return await asyncio.wrap_future(job.future)

    def _forget_if_cancelled(self, job: _Job) -> Callable[[Future], None]:
        # A weak reference: the future keeps its callbacks, and a callback holding the job (which
        # holds the future) made a reference cycle that kept every answered request's prediction
        # alive until a full garbage collection (+370 MiB of native memory under 16 clients).
        job_ref = weakref.ref(job)

        def forget(future: Future) -> None:
            job = job_ref()
            if job is None or not future.cancelled():
                return
            with self._changed:
                if job in self._queue:
                    self._queue.remove(job)
                self.dropped += 1
            logger.info(
                "request %s: %s while queued; removed from the queue, never computed (%d dropped so far)",
                job.ticket.request_id,
                job.ticket.cancelled_because,
                self.dropped,
            )

        return forget

    def _next_job(self, copy: ModelCopy) -> _Job | None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return None
                job = self._queue.popleft()
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued: its callback counts it
                gone = job.ticket.abandoned.is_set()
                if gone:
                    self.abandoned += 1
                    abandoned = self.abandoned
                now = time.monotonic()
                remaining = job.ticket.deadline - now
                estimate = self.estimate.likely_max
                # An estimate longer than the whole limit is out of date, not a reason to start nothing.
                if not gone and remaining > 0 and (remaining > estimate or estimate >= job.ticket.timeout_s):
                    copy.busy_since = now
                    return job
                if not gone:
                    self.dropped += 1
                    dropped = self.dropped
            if gone:
                logger.info(
                    "request %s: not started on %s: its caller disconnected; never computed "
                    "(%d abandoned so far)",
                    job.ticket.request_id,
                    copy.name,
                    abandoned,
                )
                job.future.set_exception(
                    RequestTimedOut("the caller disconnected before the request started")
                )
                continue
            logger.info(
                "request %s: not started on %s, %.1f s left and an inference takes about %.1f s; "
                "never computed (%d dropped so far)",
                job.ticket.request_id,
                copy.name,
                max(remaining, 0.0),
                estimate,
                dropped,
            )
            job.future.set_exception(
                RequestTimedOut(
                    f"the request could not start in time: {max(remaining, 0.0):.1f} s of its limit "
                    f"(REQUEST_TIMEOUT_S) were left and an inference takes about {estimate:.1f} s",
                    retry_after_s=_whole_seconds(estimate),
                )
            )

    # Observability and shutdown --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._changed:
            return {
                "copies": len(self.copies),
                "busy": sum(copy.busy_since is not None for copy in self.copies),
                "waiting": len(self._queue) + self._admitted,
                "estimate_s": self.estimate.seconds,
                "deviation_s": self.estimate.deviation,
                "refused": self.refused,
                "dropped": self.dropped,
                "abandoned": self.abandoned,
                "inferences": [copy.inferences for copy in self.copies],
            }

    def close(self) -> None:
        """Queued requests are dropped; running inferences finish; the copy threads then exit."""
        with self._changed:
            self._closed = True
            queued, self._queue = list(self._queue), deque()
            self._changed.notify_all()
        for job in queued:
            job.future.cancel()


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
