"""`results`: collect the async results an earlier `d2sm async` left running (its pending file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .async_invoke import PENDING_SUFFIX, collect, load_pending, positive_float
from .aws import Aws
from .errors import CliError
from .progress import emit


def pending_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.glob(f"*{PENDING_SUFFIX}"))
        if not found:
            raise CliError(
                f"{path} holds no {PENDING_SUFFIX} file (`d2sm async` writes one when interrupted)"
            )
        return found
    raise CliError(f"{path} does not exist")


def run(args: argparse.Namespace) -> None:
    aws = Aws.from_args(args)
    files = pending_files(args.path)
    errors = []
    for file in files:
        endpoint, pending = load_pending(file)
        if not pending:
            file.unlink(missing_ok=True)
            emit({"pending_file": str(file), "pending": 0}, f"{file}: nothing pending")
            continue
        try:
            collect(aws, pending, label=endpoint, timeout_s=args.timeout, poll_s=args.poll, pending_file=file)
        except CliError as error:
            if len(files) == 1:
                raise
            errors.append(f"{file}: {error}")
    if errors:
        raise CliError("; ".join(errors))


def add_parser(commands, common) -> None:
    res = commands.add_parser(
        "results", parents=[common], help="collect async results an interrupted `d2sm async` left running"
    )
    res.add_argument("path", type=Path, help=f"a {PENDING_SUFFIX} file, or a folder holding them")
    res.add_argument(
        "--timeout",
        type=positive_float,
        default=3600.0,
        help="seconds to wait for the outputs (default 3600)",
    )
    res.add_argument("--poll", type=positive_float, default=5.0, help="seconds between checks (default 5)")
    res.set_defaults(handler=run)
