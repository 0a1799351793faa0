"""Cold start: process start -> first /ping answer (listening, 503) -> first /ping 200 (loaded and
warmed up), and that time split into imports, model load and warm-up.

The split comes from a fresh process (`python -m bench.cold_start MODEL_DIR`) that takes the steps the
server's model thread takes, in the same order, with a clock between them; its phases and the
server's own start are measured one after the other, never at the same time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import Backend, Table, server_env

TITLE = "Cold start"


def phases(model_dir: Path) -> dict[str, float]:
    """Seconds for each step ModelServer._load_and_warm_up takes, in a process that has imported
    nothing of the ML stack yet."""
    started = time.perf_counter()
    from inference_server import artifact, mask_encoding

    mask_encoding.preload_encoders()
    artifact.backend_module(artifact.read_metadata(model_dir).backend)  # torch, the backend library
    imported = time.perf_counter()
    predictor = artifact.load_predictor(model_dir)
    loaded = time.perf_counter()
    from inference_server.model_server import WARMUP_SHAPE

    warmup_image = np.random.default_rng(0).integers(0, 256, WARMUP_SHAPE, np.uint8)
    warm_started = time.perf_counter()
    predictor(warmup_image)
    warmed = time.perf_counter()
    return {"imports": imported - started, "load": loaded - imported, "warm-up": warmed - warm_started}


def run(backends: list[Backend], options: argparse.Namespace) -> Table:
    table = Table(
        TITLE,
        [
            "backend",
            "start → first /ping answer",
            "start → /ping 200",
            "imports",
            "load",
            "warm-up",
        ],
    )
    for backend in backends:
        server = backend.start_server("cold-start")
        server.stop()
        split = subprocess.run(
            [sys.executable, "-m", "bench.cold_start", str(backend.model_dir)],
            env=server_env(),
            cwd=Path(__file__).resolve().parents[1],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = json.loads(split.stdout.strip().splitlines()[-1])
        table.rows.append(
            [
                backend.name,
                f"{server.listening_s:.2f} s",
                f"{server.ready_s:.2f} s",
                f"{seconds['imports']:.2f} s",
                f"{seconds['load']:.2f} s",
                f"{seconds['warm-up']:.2f} s",
            ]
        )
    table.notes.append(
        "imports / load / warm-up: torch and the backend library (and OpenCV), building the model and "
        "reading its weights, one prediction on a 640×480 noise image; measured in a fresh process "
        "taking the server's loading steps, right after the server's own start"
    )
    return table


if __name__ == "__main__":
    print(json.dumps(phases(Path(sys.argv[1]))))
