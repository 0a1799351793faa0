"""The pool's watchdog as functions, on a fake clock: which copies can serve, and what admission and
`/ping` then count. Inferences are plain callables that block on events the test sets, so nothing
races a sleep; the same behaviour over real HTTP is in test_health.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from inference_server.errors import InvalidInput, ModelUnhealthy, Overloaded
from inference_server.model_pool import HUNG_AFTER_TIMEOUTS, HealthPolicy, ModelCopy, ModelPool, QueuePolicy
from inference_server.settings import Settings, SettingsError

REFUSING = QueuePolicy(refuse_late=True, max_queue_depth=64)
TIMEOUT_S = 8
WAIT_S = 30  # generous bound on any wait for another thread; never reached when the code is right


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watched_pool(copies: int, clock: FakeClock, errors: int | None = 3, estimate_s: float = 1.0) -> ModelPool:
    pool = ModelPool(["cpu"] * copies, REFUSING, HealthPolicy.for_timeout(TIMEOUT_S, errors), clock)

    def load(copy: ModelCopy) -> float:
        copy.model = f"model-{copy.index}"
        return estimate_s

    pool.load(load)
    return pool


class Blocked:
    """An inference that runs until released: `started` is set once a copy is inside it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, model: Any) -> str:
        self.started.set()
        assert self.release.wait(WAIT_S)
        return model


def run_in_loop(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


async def submit(pool: ModelPool, request_id: str, function: Callable[[Any], Any]) -> Any:
    with pool.admit(request_id, TIMEOUT_S) as ticket:
        return await pool.run(ticket, function)


async def started(blocked: Blocked) -> None:
    assert await asyncio.to_thread(blocked.started.wait, WAIT_S)


def test_the_hung_bound_is_twice_the_request_timeout():
    assert HUNG_AFTER_TIMEOUTS == 2
    assert HealthPolicy.for_timeout(8, 5) == HealthPolicy(hung_after_s=16, unhealthy_after_errors=5)


def test_a_copy_busy_past_the_bound_is_hung_until_its_inference_ends(caplog):
    caplog.set_level(logging.INFO, logger="inference_server")
    clock = FakeClock()
    pool = watched_pool(1, clock)
    blocked = Blocked()

    async def scenario() -> None:
        running = asyncio.create_task(submit(pool, "stuck", blocked))
        await started(blocked)
        clock.now += 2 * TIMEOUT_S  # exactly at the bound: still counts as running
        assert pool.health().can_serve
        clock.now += 0.5
        health = pool.health()
        assert (health.healthy, health.copies) == (0, 1)
        assert "model copy 1 (cpu): one inference has run for 16.5 s, over the 16 s" in health.describe()
        with pytest.raises(ModelUnhealthy, match="no model copy can serve: model copy 1"):
            pool.admit("next", TIMEOUT_S).__enter__()
        blocked.release.set()
        assert await running == "model-0"
        assert pool.health().can_serve  # a hang that ends is not held against the copy

    run_in_loop(scenario)
    assert caplog.text.count("model copy 1 (cpu) counts as hung") == 1  # logged once, not per /ping
    assert "the inference that counted as hung ended" in caplog.text
    pool.close()


def test_admission_does_not_count_a_copy_whose_running_request_is_past_its_deadline():
    """1 of 2 copies stuck: requests that would queue behind the free copy's work are refused at once,
    not admitted in the hope that the stuck copy frees (which would drop them at their deadline)."""
    clock = FakeClock()
    pool = watched_pool(2, clock, estimate_s=3.0)
    stuck, busy = Blocked(), Blocked()

    async def scenario() -> None:
        first = asyncio.create_task(submit(pool, "stuck", stuck))
        await started(stuck)
        clock.now += TIMEOUT_S + 1  # its caller had a 503 at the timeout; not yet hung
        assert pool.health().healthy == 2
        second = asyncio.create_task(submit(pool, "busy", busy))
        await started(busy)
        # One queued behind `busy` (3 s) would end by 6 s, in time; that holds for one request only.
        with (
            pool.admit("fits", TIMEOUT_S),
            pytest.raises(Overloaded, match="would start in about 6.0 s"),
            pool.admit("does not fit", TIMEOUT_S),
        ):
            pass
        stuck.release.set()
        busy.release.set()
        await asyncio.gather(first, second)

    run_in_loop(scenario)
    pool.close()


def test_with_every_serving_copy_past_its_deadline_admission_refuses_at_once():
    clock = FakeClock()
    pool = watched_pool(1, clock)
    stuck = Blocked()

    async def scenario() -> None:
        first = asyncio.create_task(submit(pool, "stuck", stuck))
        await started(stuck)
        clock.now += TIMEOUT_S + 1
        with pytest.raises(Overloaded, match="still running a request past its deadline") as refused:
            pool.admit("next", TIMEOUT_S).__enter__()
        assert refused.value.retry_after_s == 1
        stuck.release.set()
        await first

    run_in_loop(scenario)
    pool.close()


def raise_runtime_error(model: Any) -> None:
    raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")


def raise_invalid_input(model: Any) -> None:
    raise InvalidInput("the user's predict_fn rejects this image")


def test_consecutive_internal_errors_take_a_copy_out_of_service_for_good(caplog):
    clock = FakeClock()
    pool = watched_pool(1, clock, errors=3)

    async def scenario() -> None:
        for attempt in range(3):
            assert pool.health().can_serve, attempt
            with pytest.raises(RuntimeError):
                await submit(pool, f"r{attempt}", raise_runtime_error)
        health = pool.health()
        assert not health.can_serve
        assert (
            "its last 3 inferences failed (UNHEALTHY_AFTER_ERRORS=3), the last with RuntimeError: CUDA "
            "error: an illegal memory access was encountered"
        ) in health.describe()
        with pytest.raises(ModelUnhealthy):
            await submit(pool, "after", lambda model: model)

    run_in_loop(scenario)
    assert "model copy 1 (cpu) is out of service" in caplog.text
    assert pool.snapshot()["inferences"] == [3]
    pool.close()


def test_a_caller_is_answered_only_once_the_copy_state_says_how_its_inference_went():
    """A caller that retries (or asks /ping) on its answer must find the copy free and its failure
    counted: the state is updated before the answer, observed here from the answer's own callback."""
    clock = FakeClock()
    pool = watched_pool(1, clock, errors=1)
    blocked = Blocked()
    seen: list[tuple[bool, bool]] = []

    async def scenario() -> None:
        first = asyncio.create_task(submit(pool, "first", blocked))
        await started(blocked)
        failing = asyncio.create_task(submit(pool, "failing", raise_runtime_error))
        while not pool._queue:  # the failing request waits behind the blocked one
            await asyncio.sleep(0)
        pool._queue[0].future.add_done_callback(
            lambda _: seen.append((pool.copies[0].busy_since is None, pool.health().can_serve))
        )
        blocked.release.set()
        assert await first == "model-0"
        with pytest.raises(RuntimeError):
            await failing

    run_in_loop(scenario)
    assert seen == [(True, False)]  # free, and out of service (UNHEALTHY_AFTER_ERRORS=1), when answered
    pool.close()


def test_a_success_or_a_request_error_resets_nothing_but_the_streak_of_internal_errors():
    pool = watched_pool(1, FakeClock(), errors=2)

    async def scenario() -> None:
        for function in [raise_runtime_error, lambda model: model, raise_runtime_error]:
            with pytest.raises(RuntimeError) if function is raise_runtime_error else _no_error():
                await submit(pool, "r", function)
        assert pool.health().can_serve  # 1 error, success, 1 error: never 2 in a row
        for _ in range(4):
            with pytest.raises(InvalidInput):
                await submit(pool, "bad", raise_invalid_input)
        assert pool.health().can_serve  # the caller's own errors do not count against the copy
        assert pool.copies[0].errors_in_a_row == 1

    run_in_loop(scenario)
    pool.close()


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_unhealthy_after_errors_zero_never_takes_a_copy_out():
    pool = watched_pool(1, FakeClock(), errors=None)

    async def scenario() -> None:
        for _ in range(10):
            with pytest.raises(RuntimeError):
                await submit(pool, "r", raise_runtime_error)

    run_in_loop(scenario)
    assert pool.health().can_serve
    pool.close()


def test_one_bad_copy_of_two_leaves_the_other_serving_and_named_in_the_health():
    """A multi-GPU instance with one bad GPU: its copy stops taking requests; the rest serve."""
    clock = FakeClock()
    pool = ModelPool(["cuda:0", "cuda:1"], REFUSING, HealthPolicy.for_timeout(TIMEOUT_S, 1), clock)
    pool.load(lambda copy: setattr(copy, "model", copy.device) or 1.0)

    def fails_on_gpu_1(model: str) -> str:
        if model == "cuda:1":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return model

    async def scenario() -> list[str]:
        served = []
        # Until cuda:1 has failed once, either copy may take a request.
        while pool.health().healthy == 2:
            with contextlib.suppress(RuntimeError):
                served.append(await submit(pool, "r", fails_on_gpu_1))
        served += [await submit(pool, f"after{i}", fails_on_gpu_1) for i in range(5)]
        return served

    served = run_in_loop(scenario)
    assert served[-5:] == ["cuda:0"] * 5
    health = pool.health()
    assert health.can_serve and health.healthy == 1
    assert health.problems[0].startswith("model copy 2 (cuda:1): its last 1 inferences failed")
    pool.close()


def test_requests_queued_when_the_last_copy_fails_are_answered_at_once():
    clock = FakeClock()
    pool = watched_pool(1, clock, errors=1)
    blocked = Blocked()

    def fail_after_release(model: Any) -> None:
        blocked(model)
        raise RuntimeError("device lost")

    async def scenario() -> None:
        first = asyncio.create_task(submit(pool, "first", fail_after_release))
        await started(blocked)
        queued = asyncio.create_task(submit(pool, "queued", lambda model: model))
        while pool.snapshot()["waiting"] == 0:
            await asyncio.sleep(0.01)
        blocked.release.set()
        with pytest.raises(RuntimeError):
            await first
        with pytest.raises(ModelUnhealthy, match="device lost"):
            await asyncio.wait_for(queued, WAIT_S)

    run_in_loop(scenario)
    pool.close()


def test_unhealthy_after_errors_setting():
    assert Settings.from_env({}).unhealthy_after_errors == 5
    assert Settings.from_env({"UNHEALTHY_AFTER_ERRORS": "0"}).unhealthy_after_errors == 0
    with pytest.raises(
        SettingsError, match="UNHEALTHY_AFTER_ERRORS='-1' is invalid; allowed: an integer >= 0"
    ):
        Settings.from_env({"UNHEALTHY_AFTER_ERRORS": "-1"})
