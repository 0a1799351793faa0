"""The pool's queue arithmetic and dispatch as functions, with plain callables for models; the same
behaviour over real HTTP with a real model is in test_overload.py."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import weakref

import pytest
import torch

from inference_server.errors import Overloaded, RequestTimedOut
from inference_server.model_pool import (
    CopyLoadFailed,
    ModelCopy,
    ModelPool,
    MovingEstimate,
    QueuePolicy,
    expected_start,
)

REFUSING = QueuePolicy(refuse_late=True, max_queue_depth=64)


@pytest.mark.parametrize(
    ("busy_for", "waiting", "estimate", "start"),
    [
        ([0.0], 0, 2.0, 0.0),  # idle copy: starts now
        ([1.5], 0, 2.0, 1.5),  # behind the running inference's remaining time
        ([1.5], 2, 2.0, 5.5),  # ... and two more inferences
        ([0.0, 1.0], 1, 2.0, 1.0),  # the idle copy takes the one waiting; the busy one frees at 1 s
        ([0.5, 1.0], 3, 2.0, 3.0),  # queued work spreads over both copies: 0.5+2, 1+2, then 2.5+2
    ],
)
def test_expected_start_spreads_the_queue_over_the_copies(busy_for, waiting, estimate, start):
    assert expected_start(busy_for, waiting, estimate) == pytest.approx(start)


def test_moving_estimate_starts_at_the_first_sample_and_follows_the_recent_ones():
    estimate = MovingEstimate()
    estimate.add(10.0)
    assert (estimate.seconds, estimate.likely_max) == (10.0, 10.0)
    for _ in range(50):
        estimate.add(2.0)
    assert estimate.seconds == pytest.approx(2.0, abs=0.01)
    assert estimate.likely_max == pytest.approx(2.0, abs=0.01)  # steady: the deviation fades


def test_a_varying_inference_time_widens_the_likely_maximum():
    estimate = MovingEstimate()
    for seconds in [4.0, 6.0] * 20:
        estimate.add(seconds)
    assert estimate.seconds == pytest.approx(5.0, abs=0.3)
    assert estimate.likely_max == pytest.approx(7.0, abs=0.4)  # mean + 2 x mean deviation (~1 s)


def loaded_pool(copies: int, policy: QueuePolicy = REFUSING, warm_up_s: float = 1.0) -> ModelPool:
    pool = ModelPool(["cpu"] * copies, policy)

    def load(copy: ModelCopy) -> float:
        copy.model = f"model-{copy.index}"
        return warm_up_s

    pool.load(load)
    return pool


def test_admission_refuses_at_once_what_cannot_finish_in_time_and_says_when_to_retry():
    pool = loaded_pool(1, warm_up_s=4.0)
    with pool.admit("a", timeout_s=10), pool.admit("b", timeout_s=10):
        # Two ahead of it, 4 s each: it would start at 8 s and end at 12 s, past its 10 s.
        with (
            pytest.raises(Overloaded, match="would start in about 8.0 s") as refused,
            pool.admit("c", timeout_s=10),
        ):
            pass
        assert refused.value.retry_after_s == 2
        assert pool.snapshot()["refused"] == 1
    # Released tickets free their places.
    with pool.admit("d", timeout_s=10):
        assert pool.snapshot()["waiting"] == 1


def test_an_idle_copy_takes_a_request_even_when_the_estimate_says_it_cannot_finish():
    # One slow outlier must not make the server refuse everything forever: running corrects it.
    pool = loaded_pool(1, warm_up_s=100.0)
    with pool.admit("a", timeout_s=10), pytest.raises(Overloaded), pool.admit("b", timeout_s=10):
        pass


def test_queue_depth_limit_applies_even_when_the_time_would_fit():
    pool = loaded_pool(2, QueuePolicy(refuse_late=True, max_queue_depth=2), warm_up_s=0.001)
    with (
        pool.admit("a", 60),
        pool.admit("b", 60),
        pytest.raises(Overloaded, match="MAX_QUEUE_DEPTH=2"),
        pool.admit("c", 60),
    ):
        pass


def test_long_queue_modes_never_refuse():
    pool = loaded_pool(1, QueuePolicy(refuse_late=False, max_queue_depth=None), warm_up_s=100.0)
    tickets = [pool.admit(str(index), timeout_s=1) for index in range(200)]
    for ticket in tickets:
        ticket.__enter__()
    assert pool.snapshot()["waiting"] == 200


def test_two_copies_take_requests_from_one_queue_in_parallel():
    pool = loaded_pool(2, warm_up_s=0.01)
    both_busy = threading.Barrier(2, timeout=30)
    seen: list[str] = []

    def infer(model: str) -> str:
        seen.append(model)
        both_busy.wait()  # returns only when the other copy is inside an inference too
        return model

    async def two_requests() -> list[str]:
        async def one(request_id: str) -> str:
            with pool.admit(request_id, timeout_s=60) as ticket:
                return await pool.run(ticket, infer)

        return await asyncio.gather(one("a"), one("b"))

    assert sorted(asyncio.run(two_requests())) == ["model-0", "model-1"]
    assert pool.snapshot()["inferences"] == [1, 1]


class Prediction:
    """Stands for a prediction: what must not outlive its request (on CPU, tens of MiB of masks)."""


def test_an_answered_prediction_is_freed_once_the_request_drops_it_without_waiting_for_gc():
    pool = loaded_pool(1, warm_up_s=0.01)
    answered: list[weakref.ref] = []

    async def request() -> None:
        with pool.admit("a", timeout_s=60) as ticket:
            prediction = await pool.run(ticket, lambda model: Prediction())
        answered.append(weakref.ref(prediction))

    gc.disable()  # a reference cycle would keep it until a full collection, which may be far off
    try:
        asyncio.run(request())
        # The copy's thread lets go of the job right after answering; without a cycle nothing else
        # holds it, so it goes at once (a cycle would keep it however long this waited).
        deadline = time.monotonic() + 2
        while answered[0]() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answered[0]() is None
    finally:
        gc.enable()
        pool.close()


def test_a_request_without_time_left_for_an_inference_is_never_started(caplog):
    caplog.set_level(logging.INFO, logger="inference_server")
    pool = loaded_pool(1, warm_up_s=5.0)
    computed = []

    async def request() -> None:
        with pool.admit("late", timeout_s=6) as ticket:
            ticket.deadline -= 2  # 4 s of its 6 s left, and an inference takes about 5 s
            await pool.run(ticket, computed.append)

    with pytest.raises(RequestTimedOut, match="could not start in time"):
        asyncio.run(request())
    assert computed == [] and pool.snapshot()["dropped"] == 1
    assert "request late: not started on model copy 1 (cpu)" in caplog.text


def test_a_request_whose_deadline_passes_in_the_queue_is_removed_and_never_computed(caplog):
    caplog.set_level(logging.INFO, logger="inference_server")
    pool = loaded_pool(1, warm_up_s=0.01)
    release = threading.Event()
    computed = []

    def hold(model: str) -> None:
        computed.append("held")
        release.wait(30)

    async def scenario() -> None:
        async def one(request_id: str, timeout_s: float, function) -> None:
            with pool.admit(request_id, timeout_s) as ticket:
                async with asyncio.timeout(timeout_s):
                    await pool.run(ticket, function)

        running = asyncio.create_task(one("running", 60, hold))
        while pool.snapshot()["busy"] == 0:
            await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            await one("queued", 0.2, lambda model: computed.append("queued"))
        assert pool.snapshot()["waiting"] == 0  # out of the queue at once, not when a copy frees
        release.set()
        await running

    asyncio.run(scenario())
    assert computed == ["held"] and pool.snapshot()["dropped"] == 1
    assert (
        "request queued: deadline passed while queued; removed from the queue, never computed" in caplog.text
    )


def test_a_copy_that_fails_to_load_fails_the_pool_naming_its_device():
    pool = ModelPool(["cuda:0", "cuda:1"], REFUSING)

    def load(copy: ModelCopy) -> float:
        if copy.index == 1:
            raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 0.1

    with pytest.raises(CopyLoadFailed) as failed:
        pool.load(load)
    assert str(failed.value) == (
        "model copy 2 (cuda:1) of 2 failed to load: "
        "MemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )


def test_one_copy_per_visible_gpu_unless_model_copies_says_otherwise(monkeypatch):
    from inference_server import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.plan(None) == ["cpu"] and devices.plan(2) == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert devices.plan(None) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert devices.plan(2) == ["cuda:0", "cuda:1"]
    assert devices.plan(6) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # building it here runs nothing
def test_mixed_precision_is_autocast_on_cuda_only(caplog):
    from inference_server import devices
    from inference_server.settings import MixedPrecision

    assert devices.precision("cuda:0", MixedPrecision.OFF)().__class__.__name__ == "nullcontext"
    autocast = devices.precision("cuda:1", MixedPrecision.BF16)()
    assert isinstance(autocast, torch.autocast)
    assert (autocast.device, autocast.fast_dtype) == ("cuda", torch.bfloat16)
    assert devices.precision("cpu", MixedPrecision.FP16)().__class__.__name__ == "nullcontext"
    assert "MIXED_PRECISION=fp16 applies to CUDA only; cpu runs in float32" in caplog.text
