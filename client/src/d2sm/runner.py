"""A folder run: at most N requests in flight; Ctrl-C sends nothing more and waits only for what is
already in flight; failures reported once per distinct message."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CliError
from .progress import bar, note
from .transport import Cancelled


class Interrupted(CliError):
    """Ctrl-C: the CLI exits 130 with this message."""


@dataclass
class Outcome:
    done: dict[Path, object] = field(default_factory=dict)
    failures: dict[Path, str] = field(default_factory=dict)
    not_sent: list[Path] = field(default_factory=list)
    interrupted: bool = False


def run_all(
    items: Sequence[Path],
    work: Callable[[Path, threading.Event], object],
    *,
    concurrency: int,
    label: str,
    on_done: Callable[[Path, object], None] = lambda item, value: None,
) -> Outcome:
    """work(item, cancel) for each item, `concurrency` at a time. Items are handed to the pool only
    when a worker is free, so after Ctrl-C nothing queued is sent: the main thread stops handing out
    work and sets `cancel` (workers waiting to retry give up) and waits for the requests in flight."""
    outcome = Outcome()
    cancel = threading.Event()
    queue = list(items)
    in_flight: dict[Future, Path] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))

    def collect(futures) -> None:
        for future in futures:
            item = in_flight.pop(future)
            try:
                value = future.result()
            except Cancelled:
                outcome.not_sent.append(item)
            except CliError as error:
                outcome.failures[item] = str(error)
            except Exception as error:  # a bug or an unexpected library error: still one line per image
                outcome.failures[item] = f"{type(error).__name__}: {error}"
            else:
                outcome.done[item] = value
                on_done(item, value)
            progress.update()

    with bar(len(queue), label) as progress:
        try:
            while queue or in_flight:
                while queue and len(in_flight) < concurrency:
                    item = queue[0]
                    in_flight[pool.submit(work, item, cancel)] = item
                    queue.pop(0)
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                collect(finished)
        except KeyboardInterrupt:
            cancel.set()
            outcome.interrupted = True
            outcome.not_sent.extend(queue)
            note(
                f"interrupted: {len(queue)} not sent; waiting for the {len(in_flight)} request(s) in "
                "flight (Ctrl-C again to stop at once)"
            )
            try:
                collect(wait(in_flight).done)
            except KeyboardInterrupt:
                outcome.not_sent.extend(in_flight.values())
                pool.shutdown(wait=False, cancel_futures=True)
                raise Interrupted(
                    f"interrupted again: {len(outcome.done)} result(s) saved, the {len(in_flight)} "
                    "in flight abandoned"
                ) from None
    pool.shutdown(wait=True)
    return outcome
