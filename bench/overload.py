"""Overload, model copies and (where CUDA exists) mixed precision, from one run: prints markdown tables.

    PYTHONPATH=container python -m bench.overload --model-dir MODEL_DIR --image photo.jpg \\
        [--clients 16] [--duration 300] [--extra-inference-s 5] [--burst 8] [--copies 1,2]
    PYTHONPATH=container python -m bench --overload   # the same tables after the others, per backend

1. Overload: the artifact plus a code/inference.py whose predict_fn sleeps --extra-inference-s after
   the real model (a model whose inference takes seconds), one copy, real-time settings. The
   single-stream rate first (one request at a time), then --clients clients sending the image in a
   loop for --duration seconds, each waiting Retry-After after a refusal as a well-behaved client
   does. Reports goodput vs the single-stream rate, refusals and how fast they came back, /ping
   latency during the run, server RSS before/after, and whether any inference ran for a request that
   was not answered (predict_fn records every request it computes).
2. Copies: --burst concurrent requests against 1, 2, ... copies (torch limited to one thread per copy
   with OMP_NUM_THREADS=1, so on a 2-core CPU two copies can use both cores), plus the same burst
   split over two one-copy server processes (threads vs processes), --rounds interleaved rounds;
   answers compared with 1 copy's.
3. Where CUDA exists: per-image latency and throughput per GPU in fp32 and under autocast (fp16),
   GPU memory per copy, and autocast's accuracy vs fp32 on --accuracy-images: matched box IoU,
   score difference and mask IoU distribution.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.common import Server, heap_policy, percentile

SLOW_INFERENCE_PY = """
import os
import time

EXTRA_S = float(os.environ["BENCH_EXTRA_INFERENCE_S"])
RECORDS = os.environ["BENCH_COMPUTED_LOG"]


def predict_fn(data, model, context):
    started = time.monotonic()
    result = model(data)
    model_s = time.monotonic() - started
    time.sleep(EXTRA_S)
    with open(RECORDS, "a") as log:
        log.write(f"{context.request_id} {started:.3f} {model_s:.3f}\\n")
    return result
"""


def table(rows: list[tuple[str, str]], header: tuple[str, str] = ("metric", "value")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} CPUs, load average (1 min) {os.getloadavg()[0]:.1f}"


# 1. Overload ---------------------------------------------------------------------------------------


def overload(args: argparse.Namespace, jpeg: bytes, work: Path) -> str:
    model_dir = shutil.copytree(args.model_dir, work / "slow-model")
    (model_dir / "code").mkdir(exist_ok=True)
    (model_dir / "code" / "inference.py").write_text(SLOW_INFERENCE_PY)
    computed_log = work / "computed.log"
    computed_log.touch()
    env = {
        "BENCH_EXTRA_INFERENCE_S": str(args.extra_inference_s),
        "BENCH_COMPUTED_LOG": str(computed_log),
        "INFERENCE_MODE": "realtime",
        "REQUEST_TIMEOUT_S": "60",  # real-time's own limit: the deadline is what this table is about
        "MODEL_COPIES": "1",
    }
    server = Server.start(model_dir, work / "overload.server.log", env)
    try:
        session = requests.Session()
        server.invoke(jpeg, session).raise_for_status()  # warms the connection and the estimate
        single = []
        for _ in range(args.single_stream_n):
            started = time.perf_counter()
            server.invoke(jpeg, session).raise_for_status()
            single.append(time.perf_counter() - started)
        single_rate = len(single) / sum(single)
        rss_before = server.rss_mib()
        computed_before = len(computed_log.read_text().splitlines())

        results: list[tuple[int, str, float, str]] = []  # status, error code, seconds, request id
        pings: list[float] = []
        ping_failures = 0
        lock = threading.Lock()
        started = time.monotonic()
        stop_at = started + args.duration

        def client() -> None:
            client_session = requests.Session()
            while time.monotonic() < stop_at:
                sent = time.perf_counter()
                response = server.invoke(jpeg, client_session)
                elapsed = time.perf_counter() - sent
                code = response.json().get("error", {}).get("code", "") if response.status_code != 200 else ""
                with lock:
                    results.append(
                        (response.status_code, code, elapsed, response.headers.get("X-Request-Id", ""))
                    )
                if response.status_code == 503:
                    time.sleep(
                        max(
                            0.0,
                            min(float(response.headers.get("Retry-After", 1)), stop_at - time.monotonic()),
                        )
                    )

        rss_warm: list[float] = []
        rss_samples: list[float] = []  # one with every ping, for the peak

        def pinger() -> None:
            nonlocal ping_failures
            ping_session = requests.Session()
            while time.monotonic() < stop_at:
                rss_samples.append(server.rss_mib())
                if time.monotonic() - started >= args.rss_warm_s * (len(rss_warm) + 1):
                    rss_warm.append(rss_samples[-1])
                sent = time.perf_counter()
                try:
                    ok = ping_session.get(f"{server.url}/ping", timeout=10).status_code == 200
                except requests.RequestException:
                    ok = False
                pings.append(time.perf_counter() - sent)
                ping_failures += not ok
                time.sleep(0.5)

        with ThreadPoolExecutor(max_workers=args.clients + 1) as pool:
            pool.submit(pinger)
            for future in [pool.submit(client) for _ in range(args.clients)]:
                future.result()
        run_s = time.monotonic() - started
        rss_after = server.rss_mib()
        log = server.log()
    finally:
        server.stop()

    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[1] == "overloaded"]
    timed_out = [r for r in results if r[1] == "request_timed_out"]
    other = len(results) - len(ok) - len(refused) - len(timed_out)
    records = [line.split() for line in computed_log.read_text().splitlines()[computed_before:]]
    computed = [record[0] for record in records]
    model_s = [float(record[2]) for record in records]
    starts = [float(record[1]) for record in records]
    # Model idle between one inference's end and the next one's start, while requests were waiting.
    # starts[1:] is one shorter: the last inference has no successor (strict=False on purpose).
    gaps = [
        b - (a + m + args.extra_inference_s) for a, m, b in zip(starts, model_s, starts[1:], strict=False)
    ]
    answered_ids = {r[3] for r in ok}
    wasted = [request for request in computed if request not in answered_ids]
    goodput = len(ok) / run_s
    dropped = len(re.findall(r"never computed", log))
    rows = [
        (
            "model",
            f"{args.model_dir.name} + {args.extra_inference_s:g} s sleep in predict_fn, 1 copy, realtime"
            + f", HEAP_POLICY={heap_policy()}",
        ),
        (
            "single-stream latency p50 (rate)",
            f"{statistics.median(single):.2f} s ({single_rate:.3f}/s, n={len(single)})",
        ),
        (
            f"{args.clients} clients for",
            f"{run_s:.0f} s (sending for {args.duration:g} s, then the queue drains)",
        ),
        (
            "answered 200 (goodput)",
            f"{len(ok)} ({goodput:.3f}/s = {goodput / single_rate:.0%} of single-stream)",
        ),
        (
            "200 latency p50 / max",
            f"{percentile([r[2] for r in ok], 50):.1f} / {max(r[2] for r in ok):.1f} s" if ok else "-",
        ),
        (
            "refused 503 overloaded (share), latency p50 / p99 / max",
            f"{len(refused)} ({len(refused) / max(len(results), 1):.0%}), "
            + (
                f"{percentile([r[2] for r in refused], 50) * 1000:.0f} / "
                f"{percentile([r[2] for r in refused], 99) * 1000:.0f} / "
                f"{max(r[2] for r in refused) * 1000:.0f} ms"
                if refused
                else "-"
            ),
        ),
        ("503 request_timed_out / other statuses", f"{len(timed_out)} / {other}"),
        ("inferences run / for a request not answered 200", f"{len(computed)} / {len(wasted)}"),
        (
            "model part of an inference (without the sleep) p50 / max; idle gap between inferences p50 / max",
            f"{percentile(model_s, 50):.2f} / {max(model_s):.2f} s; {percentile(gaps, 50) * 1000:.0f} / "
            f"{max(gaps) * 1000:.0f} ms"
            if len(gaps) > 1
            else "-",
        ),
        ("server log: requests dropped before the model ('never computed')", str(dropped)),
        (
            "/ping during the run: p50 / max, non-200",
            f"{percentile(pings, 50) * 1000:.0f} / {max(pings) * 1000:.0f} ms, "
            f"{ping_failures} (n={len(pings)})",
        ),
        (
            f"server RSS after single-stream / after {args.rss_warm_s:g} s of overload / at the end",
            f"{rss_before:.0f} / {rss_warm[0] if rss_warm else float('nan'):.0f} / {rss_after:.0f} MiB",
        ),
        (f"server RSS every {args.rss_warm_s:g} s", " ".join(f"{rss:.0f}" for rss in rss_warm) + " MiB"),
        (
            "server RSS highest during the run (read with every ping)",
            f"{max(rss_samples, default=float('nan')):.0f} MiB",
        ),
        (
            "RSS growth over the whole run / from the warm point",
            f"{rss_after / rss_before - 1:+.1%} / "
            + (f"{rss_after / rss_warm[0] - 1:+.1%}" if rss_warm else "-"),
        ),
        ("machine", machine()),
    ]
    return "### Overload (one copy)\n\n" + table(rows)


# 2. Copies -----------------------------------------------------------------------------------------


def burst(servers: list[Server], jpeg: bytes, n: int) -> tuple[float, float, list[bytes]]:
    """n concurrent requests spread round-robin over the servers: wall seconds, the servers' CPU
    seconds, answers."""
    cpu_before = sum(server.cpu_s() for server in servers)
    with ThreadPoolExecutor(max_workers=n) as clients:
        started = time.perf_counter()
        responses = list(clients.map(lambda i: servers[i % len(servers)].invoke(jpeg), range(n)))
        elapsed = time.perf_counter() - started
    for response in responses:
        response.raise_for_status()
    cpu = sum(server.cpu_s() for server in servers) - cpu_before
    return elapsed, cpu, [response.content for response in responses]


def copies(args: argparse.Namespace, jpeg: bytes, work: Path) -> str:
    """Every configuration's servers run at once and the bursts are interleaved round by round (an
    idle server takes no CPU), so a shared machine's changing load hits every configuration alike."""
    env = {"OMP_NUM_THREADS": "1", "REQUEST_TIMEOUT_S": "3600"}
    configurations: list[tuple[str, list[Server]]] = []
    try:
        for count in args.copies:
            name = f"{count} cop{'y' if count == 1 else 'ies'}, one process"
            log = work / f"copies-{count}.server.log"
            configurations.append(
                (name, [Server.start(args.model_dir, log, {**env, "MODEL_COPIES": str(count)})])
            )
        processes = [
            Server.start(args.model_dir, work / f"process-{index}.server.log", {**env, "MODEL_COPIES": "1"})
            for index in range(2)
        ]
        configurations.append(("2 processes x 1 copy", processes))
        for _, servers in configurations:
            burst(servers, jpeg, 2 * len(servers))  # warm connections and caches
        walls: dict[str, list[float]] = {name: [] for name, _ in configurations}
        cpus: dict[str, list[float]] = {name: [] for name, _ in configurations}
        answers: dict[str, list[bytes]] = {name: [] for name, _ in configurations}
        for _ in range(args.rounds):
            for name, servers in configurations:
                elapsed, cpu, contents = burst(servers, jpeg, args.burst)
                walls[name].append(elapsed)
                cpus[name].append(cpu)
                answers[name] += contents
    finally:
        for _, servers in configurations:
            for server in servers:
                server.stop()
    reference = answers[configurations[0][0]][0]
    one_copy_s = statistics.median(walls[configurations[0][0]])
    lines = [
        f"### {args.burst} concurrent requests vs number of copies (CPU, OMP_NUM_THREADS=1)",
        "",
        f"Median of {args.rounds} interleaved rounds.",
        "",
        "Server CPU / wall = cores the servers kept busy (2 at most here; a GIL-bound or CPU-starved",
        "run shows fewer); CPU per request = the work itself, whatever the machine's other load.",
        "",
        "| configuration | wall time (each round) | vs 1 copy | throughput | server CPU / wall "
        "| CPU per request "
        "| answers equal to 1 copy's |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _ in configurations:
        median = statistics.median(walls[name])
        each = ", ".join(f"{wall:.1f}" for wall in walls[name])
        cores = statistics.median(cpu / wall for cpu, wall in zip(cpus[name], walls[name], strict=True))
        per_request = statistics.median(cpus[name]) / args.burst
        lines.append(
            f"| {name} | {median:.1f} s ({each}) | {median / one_copy_s:.2f}x "
            f"| {args.burst / median:.2f}/s | "
            f"{cores:.2f} | {per_request:.2f} s | {all(answer == reference for answer in answers[name])} |"
        )
    lines += ["", f"machine: {machine()}"]
    return "\n".join(lines)


# 3. GPU: fp32 vs autocast --------------------------------------------------------------------------


def compare(reference, candidate) -> tuple[list[float], list[float], list[float], int]:
    """Greedy one-to-one matching by box IoU within a class: box IoUs, |score diffs|, mask IoUs, unmatched."""
    import numpy as np

    from tests.container.agreement import box_iou

    ious = (
        box_iou(reference.boxes, candidate.boxes) if len(reference) and len(candidate) else np.zeros((0, 0))
    )
    box, score, mask, used = [], [], [], set()
    for i in range(len(reference)):
        order: list[int] = np.argsort(-ious[i]).tolist() if ious.size else []
        for j in order:
            if j in used or candidate.classes[j] != reference.classes[i] or ious[i, j] < 0.5:
                continue
            used.add(j)
            box.append(float(ious[i, j]))
            score.append(abs(float(reference.scores[i]) - float(candidate.scores[j])))
            if reference.masks is not None:
                a, b = reference.masks[i], candidate.masks[j]
                mask.append(float((a & b).sum() / max((a | b).sum(), 1)))
            break
    unmatched = len(reference) - len(used) + len(candidate) - len(used)
    return box, score, mask, unmatched


def distribution(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    return (
        f"min {min(values):.{digits}f} / p5 {percentile(values, 5):.{digits}f} / "
        f"p50 {percentile(values, 50):.{digits}f} / max {max(values):.{digits}f}"
    )


def mixed_precision(args: argparse.Namespace, images: list[Path]) -> str:
    import torch

    from inference_server import artifact, decoding

    device = args.accuracy_device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        return "### GPU: fp32 vs autocast\n\nNo CUDA device on this machine: no GPU figures."
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    if device == "cuda":
        torch.cuda.set_device(0)
        torch.cuda.reset_peak_memory_stats()
    predictor = artifact.load_predictor(args.model_dir)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    decoded = [
        decoding.decode_image(
            path.read_bytes(), "image/jpeg", input_format=predictor.input_format, max_pixels=10**9
        )
        for path in images
    ]

    def run(autocast: bool, image):
        context = torch.autocast(device, dtype=dtype) if autocast else torch.autocast(device, enabled=False)
        with context:
            result = predictor(image)
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    timings: dict[bool, list[float]] = {False: [], True: []}
    box: list[float] = []
    score: list[float] = []
    mask: list[float] = []
    unmatched, instances = 0, 0
    for image in decoded:
        run(False, image), run(True, image)  # warm-up (cuDNN autotuning) for both
        for _ in range(args.gpu_repeats):
            for autocast in (False, True):  # interleaved
                started = time.perf_counter()
                run(autocast, image)
                timings[autocast].append(time.perf_counter() - started)
        fp32, mixed = run(False, image), run(True, image)
        b, s, m, u = compare(fp32, mixed)
        box, score, mask, unmatched, instances = (
            box + b,
            score + s,
            mask + m,
            unmatched + u,
            instances + len(fp32),
        )
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    name = (
        torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, autocast {dtype} (code-path check only)"
    )
    fp32_p50, mixed_p50 = percentile(timings[False], 50), percentile(timings[True], 50)
    rows = [
        ("device", name),
        (
            "images",
            f"{len(images)} ({', '.join(path.name for path in images)}), "
            f"{args.gpu_repeats} interleaved runs each",
        ),
        (
            "per-image latency p50 fp32 / autocast",
            f"{fp32_p50 * 1000:.1f} / {mixed_p50 * 1000:.1f} ms (speed-up {fp32_p50 / mixed_p50:.2f}x)",
        ),
        (
            "throughput per device fp32 / autocast (one copy, sequential)",
            f"{1 / fp32_p50:.1f} / {1 / mixed_p50:.1f} images/s",
        ),
        (
            "device memory per copy: weights / peak during inference",
            f"{memory:.0f} / {peak:.0f} MiB" if peak else "-",
        ),
        ("instances fp32 / unmatched after autocast", f"{instances} / {unmatched}"),
        ("matched box IoU", distribution(box)),
        ("|score difference|", distribution(score)),
        ("mask IoU", distribution(mask)),
    ]
    return "### fp32 vs autocast\n\n" + table(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=300, help="seconds the clients keep sending")
    parser.add_argument("--extra-inference-s", type=float, default=5.0, help="sleep added to each inference")
    parser.add_argument("--single-stream-n", type=int, default=5)
    parser.add_argument("--rss-warm-s", type=float, default=30, help="when the warm RSS is read")
    parser.add_argument("--burst", type=int, default=8, help="concurrent requests for the copies table")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved bursts per configuration")
    parser.add_argument("--copies", type=lambda text: [int(n) for n in text.split(",")], default=None)
    parser.add_argument("--accuracy-images", type=Path, nargs="*", default=None, help="default: the photo")
    parser.add_argument("--accuracy-device", choices=["cuda", "cpu"], help="cpu: check the code path only")
    parser.add_argument("--gpu-repeats", type=int, default=10)
    parser.add_argument("--only", choices=["overload", "copies", "precision"], action="append")
    parser.add_argument("--work-dir", type=Path, help="keep server logs here (default: a temporary folder)")


def tables(model_dir: Path, photo: Path, options: argparse.Namespace) -> list[str]:
    """Every section's markdown, printed as it is done."""
    args = argparse.Namespace(**{**vars(options), "model_dir": model_dir, "image": photo})
    if args.copies is None:
        import torch

        available = torch.cuda.device_count() if torch.cuda.is_available() else min(os.cpu_count() or 1, 2)
        args.copies = list(range(1, max(available, 2) + 1))
    jpeg = photo.read_bytes()
    sections = args.only or ["overload", "copies", "precision"]
    done = []
    with (
        tempfile.TemporaryDirectory()
        if args.work_dir is None
        else contextlib.nullcontext(args.work_dir) as work
    ):
        if "overload" in sections:
            done.append(overload(args, jpeg, Path(work)))
            print(done[-1], end="\n\n", flush=True)
        if "copies" in sections:
            done.append(copies(args, jpeg, Path(work)))
            print(done[-1], end="\n\n", flush=True)
        if "precision" in sections:
            done.append(mixed_precision(args, args.accuracy_images or [photo]))
            print(done[-1], end="\n\n", flush=True)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="extracted model.tar.gz")
    parser.add_argument("--image", type=Path, required=True, help="a JPEG photo")
    add_arguments(parser)
    args = parser.parse_args()
    tables(args.model_dir, args.image, args)


if __name__ == "__main__":
    main()
