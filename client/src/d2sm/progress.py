"""What a command prints: result lines on stdout (text, or one JSON object each with --json),
progress bars and messages on stderr, and per-image failure reports."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from .errors import CliError

# Set once by the CLI from --json; every command prints through emit().
JSON_OUTPUT = False


def set_json(enabled: bool) -> None:
    global JSON_OUTPUT
    JSON_OUTPUT = enabled


def bar(total: int, description: str, unit: str = "image") -> tqdm:
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, disable=None, leave=False)


def say(message: str) -> None:
    """A line on stdout that does not tear an open progress bar (text mode only)."""
    tqdm.write(message, file=sys.stdout)


def emit(record: dict, text: str | None = None) -> None:
    """One result or state line: `record` as JSON with --json, else `text` (skipped when None)."""
    if JSON_OUTPUT:
        tqdm.write(json.dumps(record, default=str, sort_keys=False), file=sys.stdout)
    elif text is not None:
        say(text)


def note(message: str) -> None:
    """A message for the person watching (stderr), never part of the results."""
    tqdm.write(message, file=sys.stderr)


def summarize(failures: dict[Path, str], total: int, done_message: str, *, done: dict | None = None) -> None:
    """A CliError when any image failed. Each distinct failure is printed once: with the image for
    a failure of its own, with a count when several images failed the same way."""
    if failures and total == 1:
        raise CliError(next(iter(failures.values())))
    by_message: dict[str, list[Path]] = defaultdict(list)
    for image, message in failures.items():
        by_message[message].append(image)
    for message, images in sorted(by_message.items(), key=lambda item: sorted(item[1])[0]):
        if len(images) == 1:
            note(f"error: {images[0]}: {message}")
        else:
            note(f"error: {len(images)} images ({sorted(images)[0]}, ...): {message}")
    if failures:
        raise CliError(f"{len(failures)} of {total} images failed")
    emit({"done": True, **(done or {})}, done_message)
