"""`logs MODE`: recent CloudWatch log lines of a mode's endpoint (or the batch transform jobs),
`--since`, `--follow`, `--filter`."""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from . import outputs
from .aws import Aws, as_cli_error, error_code
from .errors import CliError
from .progress import emit, note

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TRANSFORM_LOG_GROUP = "/aws/sagemaker/TransformJobs"


def duration(text: str) -> float:
    """`90s`, `10m`, `2h`, `1d` (a bare number is minutes) as seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 10m, 2h or 1d")
    return float(match.group(1)) * UNITS[match.group(2) or "m"]


def log_group(aws: Aws, mode: str, endpoint: str | None) -> tuple[str, str | None]:
    """The log group, and a stream prefix (the batch jobs of this app only)."""
    if mode == "batch":
        prefix = aws.stack_output(outputs.BATCH, outputs.BATCH_JOB_NAME_PREFIX)
        return TRANSFORM_LOG_GROUP, prefix
    name = endpoint or aws.stack_output(outputs.STACK_FOR_MODE[mode], outputs.ENDPOINT_NAME)
    return f"/aws/sagemaker/Endpoints/{name}", None


def fetch(logs, group: str, prefix: str | None, start_ms: int, pattern: str | None) -> list[dict]:
    request = {"logGroupName": group, "startTime": start_ms}
    if prefix:
        request["logStreamNamePrefix"] = prefix
    if pattern:
        request["filterPattern"] = pattern
    try:
        pages = logs.get_paginator("filter_log_events").paginate(**request)
        return [event for page in pages for event in page.get("events", [])]
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            raise CliError(f"log group {group} does not exist (nothing has logged there yet)") from None
        raise as_cli_error(f"reading log group {group}", error) from None
    except BotoCoreError as error:
        raise as_cli_error(f"reading log group {group}", error) from None


def line(event: dict) -> str:
    at = datetime.fromtimestamp(event["timestamp"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stream = event.get("logStreamName", "")
    return f"{at[:-4]}Z {stream.rsplit('/', 1)[-1][:24]} {event['message'].rstrip()}"


def run(args: argparse.Namespace) -> None:
    aws = Aws.from_args(args)
    group, prefix = log_group(aws, args.mode, args.endpoint)
    logs = aws.client("logs")
    start_ms = int((time.time() - args.since) * 1000)
    seen: set[str] = set()
    try:
        while True:
            events = fetch(logs, group, prefix, start_ms, args.filter)
            for event in sorted(events, key=lambda e: (e["timestamp"], e.get("eventId", ""))):
                if event.get("eventId") in seen:
                    continue
                seen.add(event.get("eventId", ""))
                start_ms = max(start_ms, event["timestamp"])
                emit(
                    {
                        "timestamp": event["timestamp"],
                        "stream": event.get("logStreamName"),
                        "message": event["message"].rstrip(),
                    },
                    line(event),
                )
            if not args.follow:
                if not seen:
                    note(
                        f"no log lines in {group} in the last {args.since:g} s (--since to look further back)"
                    )
                return
            time.sleep(args.poll)
    except KeyboardInterrupt:
        return  # the usual way to stop --follow


def add_parser(commands, common) -> None:
    log = commands.add_parser(
        "logs", parents=[common], help="recent CloudWatch log lines of a mode's endpoint or batch jobs"
    )
    log.add_argument("mode", choices=tuple(outputs.STACK_FOR_MODE))
    log.add_argument(
        "--since", type=duration, default=600.0, help="how far back: 30s, 10m, 2h, 1d (default 10m)"
    )
    log.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    log.add_argument("--filter", help="a CloudWatch Logs filter pattern, e.g. ERROR")
    log.add_argument("--endpoint", help="endpoint name (default: the mode stack's EndpointName output)")
    log.add_argument(
        "--poll", type=float, default=2.0, help="seconds between checks with --follow (default 2)"
    )
    log.set_defaults(handler=run)
