"""Peak memory of one request: a fresh server per row, its peak RSS (VmHWM, reset after warm-up
through /proc/PID/clear_refs) above its idle RSS, for 1, 12 and 40 MP JPEGs and 10 and 100
detections, at the stock serving sizes (800/1333, score threshold 0, so every image yields the
maximum number of detections).

    PYTHONPATH=container python -m bench --tables memory [--memory-baseline OTHER_CHECKOUT/container]

--memory-baseline also serves every row with another checkout's container code ("before"), skipping
rows whose expected peak would not fit in this machine's available memory.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from bench.common import REPO_ROOT, Backend, Server, Table

TITLE = "Peak memory per request (RSS above idle)"
# Megapixels -> width x height (3:2, as most cameras): 1, 12 and 40 MP.
IMAGE_SIZES = {1: (1224, 816), 12: (4242, 2828), 40: (7746, 5164)}
DETECTIONS = (10, 100)
JPEG_QUALITY = 90
# The measurement of the code before masks were pasted into their crops: about 9 bytes per
# pixel per detection on torchvision (one float32 full-size mask per detection, then thresholded),
# used to skip "before" rows that would not fit on this machine.
BEFORE_BYTES_PER_PIXEL_PER_DETECTION = {"torchvision": 9, "detectron2": 1.5}
SAMPLE_INTERVAL_S = 0.005


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-baseline",
        type=Path,
        help="memory table: also measure the container code in this directory (e.g. main's), as 'before'",
    )
    parser.add_argument(
        "--memory-sizes", default="1,12,40", help="memory table: megapixels (default 1,12,40)"
    )


def smooth_jpeg(megapixels: int) -> bytes:
    """A low-detail photo-like image (gradients and a few soft blobs) that compresses well, so even
    40 MP stays far under the 6 MB real-time payload limit."""
    width, height = IMAGE_SIZES[megapixels]
    rng = np.random.default_rng(megapixels)
    # Built small and scaled up: smooth at any size, cheap to make.
    small = np.zeros((64, 96, 3), np.float32)
    ys, xs = np.mgrid[0:64, 0:96]
    for _ in range(12):
        cy, cx, radius = rng.uniform(0, 64), rng.uniform(0, 96), rng.uniform(4, 20)
        colour = rng.uniform(0, 255, 3)
        weight = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))[..., None]
        small = small * (1 - weight) + colour * weight
    pixels = Image.fromarray(small.clip(0, 255).astype(np.uint8))
    image = pixels.resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _status_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    assert match is not None, field
    return int(match.group(1))


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0, `5` in clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def available_mib() -> float:
    return _status_like("/proc/meminfo", "MemAvailable") / 1024


def _status_like(path: str, field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path(path).read_text())
    assert match is not None, field
    return int(match.group(1))


@dataclass
class Measurement:
    status: str
    peak_above_idle_mib: float | None = None
    idle_mib: float | None = None
    detections: int | None = None
    seconds: float | None = None


def measure(model_dir: Path, container_dir: Path, jpeg: bytes, log_path: Path) -> Measurement:
    env = {"PYTHONPATH": str(container_dir), "REQUEST_TIMEOUT_S": "3600"}
    server = Server.start(model_dir, log_path, env)
    try:
        pid = server.process.pid
        time.sleep(1)  # the warm-up's garbage released
        reset_peak(pid)
        idle = _status_kib(pid, "VmRSS")
        started = time.perf_counter()
        response = requests.post(
            f"{server.url}/invocations",
            data=jpeg,
            headers={"Content-Type": "image/jpeg"},
            timeout=3600,
        )
        seconds = time.perf_counter() - started
        peak = _status_kib(pid, "VmHWM")
    finally:
        server.stop()
    detections = None
    if response.status_code == 200:
        document = response.json()
        instances = document.get("instances", document.get("predictions"))
        detections = len(instances) if isinstance(instances, list) else None
        status = "200"
    else:
        status = f"{response.status_code} {response.text[:120]}"
    return Measurement(status, (peak - idle) / 1024, idle / 1024, detections, seconds)


# One mask pasted into a box as large as a 40 MP image, in a fresh process: the crop's own peak
# (the benchmark's random-weight boxes are smaller than the worst case a real model can return).
CROP_PEAK_SCRIPT = """
import re, sys, torch
def kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
width, height = {width}, {height}
probabilities, box = torch.rand(1, 28, 28), torch.tensor([[0.0, 0.0, width, height]])
if "{backend}" == "detectron2":
    from inference_server.backends.detectron2 import Detectron2MaskPaste
    paste = Detectron2MaskPaste(probabilities, box, height, width)
else:
    from inference_server.backends.torchvision import TorchvisionMaskPaste
    paste = TorchvisionMaskPaste(probabilities[:, None], box, height, width)
paste(0)  # the libraries' one-off allocations
open("/proc/self/clear_refs", "w").write("5")
idle = kib("VmRSS")
paste(0)
print((kib("VmHWM") - idle) * 1024)
"""


def crop_peak_bytes(backend: str, width: int, height: int) -> int:
    """Peak RSS of pasting one mask whose box is the whole width x height image."""
    script = CROP_PEAK_SCRIPT.format(backend=backend, width=width, height=height)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "container")}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1])


def artifact(backend: Backend, detections: int, out_dir: Path) -> Path:
    """The backend's serving-size artifact with at most `detections` detections, cached."""
    from bench.__main__ import SERVING_SIZES
    from tests.container import artifacts

    dest = out_dir / "artifacts" / f"memory-{backend.name}-{detections}"
    if (dest / "model" / "metadata.json").is_file():
        return dest / "model"
    builder = {
        "torchvision": artifacts.build_torchvision_artifact,
        "detectron2": artifacts.build_detectron2_artifact,
    }[backend.name]
    return builder(dest, **{**SERVING_SIZES, "detections_per_image": detections})


def run(backends: list[Backend], options: argparse.Namespace) -> Table:
    table = Table(
        TITLE,
        ["image", "JPEG", "max detections", "backend", "code", "peak RSS above idle", "idle RSS", "status"],
    )
    sizes = [int(size) for size in options.memory_sizes.split(",") if size.strip()]
    codes = [("after", REPO_ROOT / "container")]
    if options.memory_baseline is not None:
        codes.insert(0, ("before", options.memory_baseline.resolve()))
    for backend in backends:
        for megapixels in sizes:
            jpeg = smooth_jpeg(megapixels)
            width, height = IMAGE_SIZES[megapixels]
            for detections in DETECTIONS:
                model_dir = artifact(backend, detections, options.out)
                for code, container_dir in codes:
                    row = [
                        f"{megapixels} MP ({width}×{height})",
                        f"{len(jpeg) / 1e6:.2f} MB",
                        str(detections),
                        backend.name,
                        code,
                    ]
                    if code == "before":
                        need_mib = (
                            BEFORE_BYTES_PER_PIXEL_PER_DETECTION.get(backend.name, 9)
                            * width
                            * height
                            * detections
                            / 2**20
                        )
                        if need_mib > 0.6 * available_mib():
                            table.rows.append(
                                row
                                + [
                                    f"not run (needs about {need_mib / 1024:.0f} GiB)",
                                    "",
                                    f"skipped: {available_mib() / 1024:.0f} GiB available",
                                ]
                            )
                            continue
                    log = options.out / f"memory-{backend.name}-{megapixels}mp-{detections}-{code}.log"
                    result = measure(model_dir, container_dir, jpeg, log)
                    table.rows.append(
                        row
                        + [
                            f"{result.peak_above_idle_mib:.0f} MiB",
                            f"{result.idle_mib:.0f} MiB",
                            f"{result.status}"
                            + (f", {result.detections} detections" if result.detections is not None else "")
                            + f", {result.seconds:.1f} s, load {os.getloadavg()[0]:.1f}",
                        ]
                    )
                    print("  " + " | ".join(table.rows[-1]), flush=True)
    for backend in backends:
        width, height = IMAGE_SIZES[max(sizes)]
        peak = crop_peak_bytes(backend.name, width, height)
        table.notes.append(
            f"{backend.name}: one mask crop whose box is the whole {width}×{height} image peaks at "
            f"{peak / 2**20:.0f} MiB ({peak / (width * height):.1f} B/px), in a process of its own"
        )
    table.notes += [
        "a fresh server per row (real-time mode, one model copy, CPU); peak = the server process's VmHWM "
        "after the request, reset through /proc/PID/clear_refs after the warm-up; idle = its VmRSS then",
        "images: smooth synthetic JPEGs (quality 90), so 40 MP stays under the 6 MB payload limit; "
        "score threshold 0, so the detections are the artifact's maximum",
    ]
    return table
