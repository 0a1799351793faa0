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

Health (`HealthPolicy`): a copy is unhealthy while one inference has run longer than
`hung_after_s` (twice the request timeout: its caller was answered 503 at the timeout, so it
computes for nobody and is presumed hung), and for good once `unhealthy_after_errors` inferences in
a row have raised something other than a ServingError (a sticky CUDA error fails every inference
after the first). Admission counts only healthy copies, and a copy whose running request is past its
deadline counts as no capacity (it frees at an unknown time); with no healthy copy left every request
is refused at once and `/ping` fails, so SageMaker replaces the instance. A copy that fails is not
given another request; the others go on serving (on a multi-GPU instance, one bad GPU costs its
share of the throughput and is named in the log and in `/ping`'s body, while `/ping` stays 200).
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

from inference_server.errors import ModelUnhealthy, Overloaded, RequestTimedOut, ServingError, first_line

logger = logging.getLogger("inference_server")

# Weight of the newest inference in the moving estimate: about the last ten inferences count.
ESTIMATE_WEIGHT = 0.2


@dataclass(frozen=True)
class QueuePolicy:
    refuse_late: bool  # refuse at admission what cannot finish in time (real-time and serverless)
    max_queue_depth: int | None  # admitted requests waiting for a copy; None: no limit


@dataclass(frozen=True)
class HealthPolicy:
    """When the watchdog takes a copy out of service (see the module docstring)."""

    hung_after_s: float  # one inference running longer than this: the copy is hung
    unhealthy_after_errors: int | None  # this many internal errors in a row: the copy is broken; None: never

    @classmethod
    def for_timeout(cls, request_timeout_s: float, unhealthy_after_errors: int | None) -> HealthPolicy:
        return cls(HUNG_AFTER_TIMEOUTS * request_timeout_s, unhealthy_after_errors)


# A copy is hung once one inference has run this many request timeouts: past the first its caller
# has its 503; the second leaves room for an inference that is merely slow (a cold cache, a huge image).
HUNG_AFTER_TIMEOUTS = 2
NEVER_UNHEALTHY = HealthPolicy(hung_after_s=math.inf, unhealthy_after_errors=None)


@dataclass(eq=False)
class ModelCopy:
    index: int
    device: str  # "cpu", "cuda:0", ...
    model: Any = None
    # What each inference on this copy runs inside (torch.autocast with MIXED_PRECISION).
    precision: Callable[[], AbstractContextManager] = nullcontext
    busy_since: float | None = None
    running_deadline: float | None = None  # the deadline of the request it is running
    inferences: int = 0
    errors_in_a_row: int = 0
    failed: str | None = None  # why the copy was taken out of service for good
    reported_hung: bool = False

    @property
    def name(self) -> str:
        return f"model copy {self.index + 1} ({self.device})"

    def problem(self, now: float, policy: HealthPolicy) -> str | None:
        """Why the copy cannot serve now; None when it can."""
        if self.failed is not None:
            return self.failed
        if self.busy_since is not None and now - self.busy_since > policy.hung_after_s:
            return (
                f"one inference has run for {now - self.busy_since:.1f} s, over the "
                f"{policy.hung_after_s:g} s after which a copy counts as hung "
                f"({HUNG_AFTER_TIMEOUTS} x REQUEST_TIMEOUT_S)"
            )
        return None


@dataclass(frozen=True)
class Health:
    healthy: int
    copies: int
    problems: tuple[str, ...]  # "model copy 2 (cuda:1): why", one per unhealthy copy

    @property
    def can_serve(self) -> bool:
        return self.healthy > 0

    def describe(self) -> str:
        return f"{self.healthy} of {self.copies} model copies can serve" + (
            f"; {'; '.join(self.problems)}" if self.problems else ""
        )


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
    def __init__(
        self,
        devices: list[str],
        policy: QueuePolicy,
        health_policy: HealthPolicy = NEVER_UNHEALTHY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.copies = [ModelCopy(index, device) for index, device in enumerate(devices)]
        self.policy = policy
        self.health_policy = health_policy
        self._clock = clock  # time.monotonic; tests pass their own
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
        started = self._clock()
        result: Any = None
        failure: BaseException | None = None
        try:
            with copy.precision():
                result = job.function(copy.model)
        except BaseException as error:
            failure = error
        with self._changed:
            if failure is None:
                self.estimate.add(self._clock() - started)
            if copy.reported_hung:
                logger.warning(
                    "%s: the inference that counted as hung ended after %.0f s; the copy serves again",
                    copy.name,
                    self._clock() - started,
                )
            copy.busy_since = copy.running_deadline = None
            copy.reported_hung = False
            copy.inferences += 1
            self._count_error(copy, failure)
            self._changed.notify_all()
        # Answered only once the copy's state says how it went: a caller that sends its next request
        # (or asks /ping) on this answer finds the copy free and its failures counted, not the state
        # from before.
        if failure is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(failure)

    def _count_error(self, copy: ModelCopy, failure: BaseException | None) -> None:
        if failure is None:
            copy.errors_in_a_row = 0
            return
        if isinstance(failure, ServingError):
            # The request's own fault (a user predict_fn may raise InvalidInput): nothing about the copy.
            return
        copy.errors_in_a_row += 1
        limit = self.health_policy.unhealthy_after_errors
        if limit is not None and copy.errors_in_a_row >= limit and copy.failed is None:
            copy.failed = (
                f"its last {copy.errors_in_a_row} inferences failed (UNHEALTHY_AFTER_ERRORS={limit}), "
                f"the last with {first_line(failure)}"
            )
            health = self._health(self._clock())
            logger.error(
                "%s is out of service: %s; %d of %d model copies can serve",
                copy.name,
                copy.failed,
                health.healthy,
                health.copies,
            )
            if all(other.failed is not None for other in self.copies):
                # No copy will ever take the queued requests: answer them now, not at their deadline.
                queued, self._queue = list(self._queue), deque()
                for job in queued:
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(ModelUnhealthy(f"no model copy can serve: {copy.failed}"))

    # Admission -------------------------------------------------------------------------------------

    @contextmanager
    def admit(self, request_id: str, timeout_s: float) -> Iterator[Ticket]:
        """Admit a request or raise Overloaded (ModelUnhealthy when no copy can serve) at once; the
        ticket holds its place until it runs."""
        now = self._clock()
        with self._changed:
            health = self._health(now)
            if not health.can_serve:
                self.refused += 1
                raise ModelUnhealthy(f"no model copy can serve: {'; '.join(health.problems)}")
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
        serving = self._serving_copies(now)
        if depth is not None and waiting >= depth:
            self.refused += 1
            # Every copy must finish the requests above the limit before this one fits.
            over = waiting - depth + 1
            raise Overloaded(
                f"{waiting} requests are already waiting for the model (MAX_QUEUE_DEPTH={depth})",
                retry_after_s=whole_seconds(math.ceil(over / max(1, len(serving))) * estimate),
            )
        if not self.policy.refuse_late or (waiting == 0 and any(copy.busy_since is None for copy in serving)):
            # An idle copy always takes the request: running it is also how a stale estimate (say,
            # one slow outlier) gets corrected, so the server can never refuse everything forever.
            return
        busy_for = self._busy_for(now, estimate, serving)
        start = expected_start(busy_for, waiting, estimate) if busy_for else math.inf
        if math.isinf(start):
            self.refused += 1
            raise Overloaded(
                f"every model copy that can serve ({len(serving)} of {len(self.copies)}) is still running "
                "a request past its deadline",
                retry_after_s=whole_seconds(estimate),
            )
        if start + self.estimate.likely_max > timeout_s:
            self.refused += 1
            raise Overloaded(
                f"the model is busy: with {waiting} requests waiting, this one would start in about "
                f"{start:.1f} s and finish after its {timeout_s:g} s limit (REQUEST_TIMEOUT_S)",
                retry_after_s=whole_seconds(start + self.estimate.likely_max - timeout_s),
            )

    def _serving_copies(self, now: float) -> list[ModelCopy]:
        return [copy for copy in self.copies if copy.problem(now, self.health_policy) is None]

    def _busy_for(self, now: float, estimate: float, copies: list[ModelCopy]) -> list[float]:
        """Seconds until each copy is free; a copy whose running request is past its deadline frees at
        an unknown time (it may be hung), so it is no capacity: left out."""
        return [
            0.0 if copy.busy_since is None else max(0.0, estimate - (now - copy.busy_since))
            for copy in copies
            if copy.busy_since is None or copy.running_deadline is None or now <= copy.running_deadline
        ]

    # Health ----------------------------------------------------------------------------------------

    def health(self) -> Health:
        """Whether any copy can serve now: what `/ping` answers. A copy newly found hung is logged."""
        with self._changed:
            return self._health(self._clock())

    def _health(self, now: float) -> Health:
        problems = []
        for copy in self.copies:
            problem = copy.problem(now, self.health_policy)
            if problem is None:
                continue
            problems.append(f"{copy.name}: {problem}")
            if copy.failed is None and not copy.reported_hung:
                copy.reported_hung = True
                logger.error("%s counts as hung: %s", copy.name, problem)
        return Health(len(self.copies) - len(problems), len(self.copies), tuple(problems))

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
                while not self._queue and not self._closed and copy.failed is None:
                    self._changed.wait()
                if self._closed:
                    return None
                if copy.failed is not None:
                    return None  # out of service: the other copies take the queue
                job = self._queue.popleft()
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued: its callback counts it
                gone = job.ticket.abandoned.is_set()
                if gone:
                    self.abandoned += 1
                    abandoned = self.abandoned
                now = self._clock()
                remaining = job.ticket.deadline - now
                estimate = self.estimate.likely_max
                # An estimate longer than the whole limit is out of date, not a reason to start nothing.
                if not gone and remaining > 0 and (remaining > estimate or estimate >= job.ticket.timeout_s):
                    copy.busy_since = now
                    copy.running_deadline = job.ticket.deadline
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
                    retry_after_s=whole_seconds(estimate),
                )
            )

    # Observability and shutdown --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._changed:
            health = self._health(self._clock())
            return {
                "copies": len(self.copies),
                "healthy": health.healthy,
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


def whole_seconds(seconds: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
