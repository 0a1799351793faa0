"""Progress bars on stderr (hidden when stderr is not a terminal) and per-image failure reports."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from .errors import CliError


def bar(total: int, description: str, unit: str = "image") -> tqdm:
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, disable=None, leave=False)


def say(message: str) -> None:
    """A line on stdout that does not tear an open progress bar."""
    tqdm.write(message, file=sys.stdout)


def summarize(failures: dict[Path, str], total: int, done_message: str) -> None:
    """A CliError when any image failed; for several images, each failure first on its own line."""
    if failures and total == 1:
        raise CliError(next(iter(failures.values())))
    for image, message in sorted(failures.items()):
        tqdm.write(f"error: {image}: {message}", file=sys.stderr)
    if failures:
        raise CliError(f"{len(failures)} of {total} images failed")
    say(done_message)
