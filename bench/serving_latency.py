"""Serving overhead on one machine, from one run: prints a table.

    PYTHONPATH=container python bench/serving_latency.py --model-dir MODEL_DIR --image photo.jpg [-n 10]

1. Starts the real server (`python -m inference_server`) on a free port and times process start ->
   first answer (503 while loading) -> first 200 from /ping (model loaded and warmed up).
2. Sends the image N times to POST /invocations, one at a time (p50/p90), after recording the
   response size for each mask format.
3. Times the same artifact's predictor loaded in this process, called directly on the same decoded
   image, interleaved one call at a time with the requests (the idle side never competes for the
   CPU, and a busy machine slows both alike), plus the decode and encode steps on their own.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

CONTAINER_DIR = Path(__file__).resolve().parents[1] / "container"
sys.path.insert(0, str(CONTAINER_DIR))  # a script run from the repo, like the server's PYTHONPATH

from inference_server import codecs  # noqa: E402
from inference_server.codecs import MaskFormat, RequestOptions  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


def timed(function, repeat: int) -> list[float]:
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        durations.append(time.perf_counter() - started)
    return durations


def start_server(model_dir: Path, port: int, log_path: Path) -> tuple[subprocess.Popen, float, float]:
    """The server process, and seconds from its start to the first answer and to the first 200."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(CONTAINER_DIR), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "inference_server", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command + ["--model-dir", str(model_dir)], env=env, stdout=log, stderr=log)
    first_answer = None
    while process.poll() is None:
        try:
            status = requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code
        except requests.ConnectionError:
            status = None
        now = time.perf_counter() - started
        if status is not None and first_answer is None:
            first_answer = now
        if status == 200:
            return process, first_answer, now
        time.sleep(0.02)
    raise SystemExit(f"server exited with {process.returncode}; see {log_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="extracted model.tar.gz")
    parser.add_argument("--image", type=Path, required=True, help="a JPEG photo")
    parser.add_argument("-n", type=int, default=10, help="timed requests / direct calls (default 10)")
    parser.add_argument("--log", type=Path, default=Path("serving_latency.server.log"))
    args = parser.parse_args()
    jpeg = args.image.read_bytes()

    from inference_server import artifact

    predictor = artifact.load_predictor(args.model_dir)
    image = codecs.decode_image(jpeg, "image/jpeg", input_format=predictor.input_format, max_pixels=10**9)
    detections = predictor(image)  # warm-up, as the server does

    port = free_port()
    process, first_answer_s, ready_s = start_server(args.model_dir, port, args.log)
    try:
        url = f"http://127.0.0.1:{port}/invocations"
        session = requests.Session()

        def invoke(mask_format: str = "rle") -> requests.Response:
            headers = {
                "Content-Type": "image/jpeg",
                "X-Amzn-SageMaker-Custom-Attributes": f"mask_format={mask_format}",
            }
            response = session.post(url, data=jpeg, headers=headers, timeout=600)
            response.raise_for_status()
            return response

        response_bytes = {fmt: len(invoke(fmt).content) for fmt in MaskFormat}  # also warms the connection
        instances = len(invoke().json()["instances"])
        # Interleaved, one call at a time: a busy machine slows both sides alike.
        served, direct = [], []
        for _ in range(args.n):
            served += timed(invoke, 1)
            direct += timed(lambda: predictor(image), 1)
    finally:
        process.terminate()
        process.wait(timeout=60)

    decode = timed(
        lambda: codecs.decode_image(
            jpeg, "image/jpeg", input_format=predictor.input_format, max_pixels=10**9
        ),
        args.n,
    )
    encode = timed(
        lambda: codecs.encode_json(
            codecs.detections_document(detections, predictor.class_names, RequestOptions())
        ),
        args.n,
    )

    height, width = image.shape[:2]
    rows = [
        ("image", f"{args.image.name} {width}x{height}, {len(jpeg)} bytes, {instances} instances"),
        ("process start -> first /ping answer (503)", f"{first_answer_s:.2f} s"),
        ("process start -> first /ping 200", f"{ready_s:.2f} s"),
        (
            f"POST /invocations p50 / p90 (n={args.n})",
            f"{percentile(served, 50) * 1000:.0f} / {percentile(served, 90) * 1000:.0f} ms",
        ),
        (
            f"direct predictor p50 / p90 (n={args.n})",
            f"{percentile(direct, 50) * 1000:.0f} / {percentile(direct, 90) * 1000:.0f} ms",
        ),
        (
            "serving overhead (p50 difference)",
            f"{(percentile(served, 50) - percentile(direct, 50)) * 1000:.0f} ms",
        ),
        ("  of which decode JPEG p50", f"{percentile(decode, 50) * 1000:.1f} ms"),
        ("  of which encode JSON+RLE p50", f"{percentile(encode, 50) * 1000:.1f} ms"),
    ] + [(f"response bytes, mask_format={fmt}", str(size)) for fmt, size in response_bytes.items()]
    rows.append(
        ("machine: CPUs, load average (1 min) at the end", f"{os.cpu_count()}, {os.getloadavg()[0]:.1f}")
    )
    width_0 = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width_0}} | value")
    print(f"{'-' * width_0}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width_0}} | {value}")


if __name__ == "__main__":
    main()
