"""Threads that never hold the process: a thread pool of daemon threads, and running a function on a
daemon thread of its own.

concurrent.futures.ThreadPoolExecutor joins its threads when the interpreter exits, and asyncio's
default executor is shut down (waited for) when its loop closes: one user handler stuck for ever
(an input_fn that never returns, a model_fn that hangs) would keep the process alive after SIGTERM
until SageMaker kills it. These threads are abandoned at exit instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


class ThreadAborted(RuntimeError):
    """The call raised a BaseException that is not an Exception (SystemExit, KeyboardInterrupt):
    passed on as this, since asyncio lets those stop the event loop of whoever awaits the result."""


def _passable(error: BaseException) -> BaseException:
    if isinstance(error, Exception):
        return error
    aborted = ThreadAborted(f"{type(error).__name__}: {error}")
    aborted.__cause__ = error
    return aborted


class DaemonThreadPool(Executor):
    """A fixed number of daemon threads taking work from one queue, in order."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{thread_name_prefix}-{index}", daemon=True)
            for index in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("the thread pool is shut down")
        future: Future[T] = Future()
        call = (lambda: fn(*args, **kwargs)) if kwargs else fn
        self._work.put((future, call, () if kwargs else args))
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, function, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except BaseException as error:  # the caller's await raises it
                future.set_exception(_passable(error))
            else:
                future.set_result(result)
            del item, future, function, args  # nothing of the answered call is kept while waiting

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; queued calls are cancelled when cancel_futures. With wait, the threads
        finish what they run first (never used at exit: that is the point of this pool)."""
        self._closed = True
        if cancel_futures:
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._work.get_nowait()
                    if item is not None:
                        item[0].cancel()
        for _ in self._threads:
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


async def on_daemon_thread(function: Callable[[], T], name: str) -> T:
    """function() on a new daemon thread; cancelling the await abandons the thread, which runs on."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(error: BaseException | None, result: Any) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(_passable(error))
        else:
            done.set_result(result)

    def run() -> None:
        try:
            result, error = function(), None
        except BaseException as raised:
            result, error = None, raised
        # The loop may be closed by now (the server stopped while this ran): nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, error, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
