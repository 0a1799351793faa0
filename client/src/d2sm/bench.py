"""`bench TARGET`: latency percentiles and throughput at 1, 2, 4, ... requests in flight against a
server URL or an endpoint, as a table. A refused request (503/429) counts as an error, not retried,
so the table shows where the target starts refusing."""

from __future__ import annotations

import argparse
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import outputs, progress
from .aws import Aws, require_in_service
from .errors import CliError
from .files import content_type, images_in, parse_result, read_bytes
from .invoke import MODES, positive_int
from .progress import emit, note, say
from .status import table
from .transport import EndpointTarget, Retryable, UrlTarget

COLUMNS = ("concurrency", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "throughput_rps")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def levels(maximum: int) -> list[int]:
    found, level = [], 1
    while level < maximum:
        found.append(level)
        level *= 2
    return [*found, maximum]


def target_for(args: argparse.Namespace, concurrency: int):
    if args.target.startswith(("http://", "https://")):
        return UrlTarget(args.target, concurrency=concurrency)
    aws = Aws.from_args(args)
    if args.target in MODES:
        stack = outputs.STACK_FOR_MODE[args.target]
        found = aws.stack_outputs(stack)
        name = found.get(outputs.ENDPOINT_NAME) or aws.stack_output(stack, outputs.ENDPOINT_NAME)
        component = args.inference_component or found.get(outputs.INFERENCE_COMPONENT_NAME)
    else:
        name, component = args.target, args.inference_component
    require_in_service(aws, name)
    return EndpointTarget(aws, name, component=component, variant=args.target_variant)


def measure(target, bodies: list[tuple[bytes, str]], concurrency: int, requests: int, attributes) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            body, kind = bodies[index % len(bodies)]
            started = time.perf_counter()
            try:
                parse_result(target.invoke(body, kind, attributes), target.name)
            except (CliError, Retryable) as error:
                with lock:
                    errors.append(str(error))
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - started
    latencies.sort()
    if errors:
        note(f"concurrency {concurrency}: {len(errors)} error(s), e.g. {errors[0]}")
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": len(errors),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "throughput_rps": round(len(latencies) / wall, 2) if wall > 0 else math.nan,
    }


def run(args: argparse.Namespace) -> None:
    images = images_in(args.image, recursive=False)
    bodies = [(read_bytes(image, "image "), content_type(image)) for image in images]
    target = target_for(args, args.max_concurrency)
    note(f"warming up {target.name} with one request")
    warm = measure(target, bodies, 1, 1, args.attributes)
    if warm["errors"]:
        raise CliError(f"{target.name} does not answer a first request: fix that before benchmarking")
    rows = []
    for concurrency in levels(args.max_concurrency):
        row = measure(target, bodies, concurrency, max(args.requests, concurrency), args.attributes)
        rows.append(row)
        emit(row)
    if not progress.JSON_OUTPUT:
        say(table(rows, COLUMNS))


def add_parser(commands, common) -> None:
    ben = commands.add_parser(
        "bench",
        parents=[common],
        help="latency p50/p95/p99 and throughput at 1, 2, 4, ... requests in flight",
    )
    ben.add_argument(
        "target", help="a server URL (http://127.0.0.1:8080), an endpoint name, or realtime|serverless"
    )
    ben.add_argument(
        "--image", type=Path, required=True, help="the image sent (a folder: its images in turn)"
    )
    ben.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=8,
        help="highest level; levels double from 1 (default 8)",
    )
    ben.add_argument("--requests", type=positive_int, default=32, help="requests per level (default 32)")
    ben.add_argument("--attributes", help="custom attributes sent with every request")
    ben.add_argument("--inference-component", help="for an endpoint: the component to call")
    ben.add_argument("--target-variant", help="for an endpoint: the variant to call")
    ben.set_defaults(handler=run)
