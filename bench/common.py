"""What the benchmark tables share: the backends under test, the real server process, timing and
markdown helpers. A table is a module with a TITLE and `run(backends, options) -> Table`."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import requests

if TYPE_CHECKING:
    from inference_server.allocator import HeapPolicy

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTAINER_DIR = REPO_ROOT / "container"
# The 1024x685 balloon photo: the size the serving figures were taken on.
DEFAULT_PHOTO = REPO_ROOT / "tests" / "data" / "images" / "2937599387_80e7d6e050_b.jpg"
READY_TIMEOUT_S = 900


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Plain lines after the notes (a summary line that scripts grep for).
    footer: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        if self.footer:
            lines += [""] + self.footer
        return "\n".join(lines).rstrip() + "\n"


def percentile(samples: list[float], q: int) -> float:
    """The q-th percentile, interpolated between samples (so p95 of 10 samples is not the maximum)."""
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a server runs in here: the container package on the path, nothing else of
    the developer's serving settings."""
    env = {
        key: value for key, value in os.environ.items() if key not in ("INFERENCE_MODE", "SAGEMAKER_BATCH")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CONTAINER_DIR), os.environ.get("PYTHONPATH")]))
    # Latency, not the real-time deadline, is measured: a slow or busy machine must not turn into 503s.
    env["REQUEST_TIMEOUT_S"] = "3600"
    env.update(extra or {})
    return env


@dataclass
class Server:
    """`python -m inference_server` on a free port, with how long it took to listen and to be ready."""

    process: subprocess.Popen
    url: str
    log_path: Path
    listening_s: float = 0.0  # process start -> first /ping answer (503 while loading)
    ready_s: float = 0.0  # process start -> first /ping 200 (model loaded and warmed up)

    @classmethod
    def start(cls, model_dir: Path, log_path: Path, env: Mapping[str, str] | None = None) -> Server:
        port = free_port()
        command = [sys.executable, "-m", "inference_server", "--host", "127.0.0.1", "--port", str(port)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command + ["--model-dir", str(model_dir)], env=server_env(env), stdout=log, stderr=log
            )
        server = cls(process, f"http://127.0.0.1:{port}", log_path)
        while time.perf_counter() - started < READY_TIMEOUT_S:
            if process.poll() is not None:
                raise SystemExit(f"server exited with {process.returncode}; see {log_path}")
            try:
                status = requests.get(f"{server.url}/ping", timeout=5).status_code
            except requests.ConnectionError:
                status = None
            elapsed = time.perf_counter() - started
            if status is not None and not server.listening_s:
                server.listening_s = elapsed
            if status == 200:
                server.ready_s = elapsed
                return server
            time.sleep(0.01)
        server.stop()
        raise SystemExit(f"server not ready after {READY_TIMEOUT_S} s; see {log_path}")

    def invoke(self, jpeg: bytes, session: requests.Session | None = None) -> requests.Response:
        return (session or requests).post(
            f"{self.url}/invocations", data=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=600
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        if found is None:
            raise RuntimeError(f"no VmRSS in /proc/{self.process.pid}/status")
        return int(found.group(1)) / 1024

    def _stat(self) -> list[str]:
        """The fields of /proc/PID/stat after the command name, so fields[7] is minflt (man proc)."""
        return Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used (all its threads)."""
        fields = self._stat()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kernel_cpu_s(self) -> float:
        return int(self._stat()[12]) / os.sysconf("SC_CLK_TCK")

    def page_faults(self) -> int:
        """Minor page faults so far (a fault that maps a page without reading the disk)."""
        return int(self._stat()[7])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Backend:
    """One backend under test: its artifact, the photo, and (loaded on first use) the same artifact's
    predictor in this process, the photo decoded for it, and its detections."""

    name: str
    model_dir: Path
    photo: Path
    out_dir: Path

    @cached_property
    def jpeg(self) -> bytes:
        return self.photo.read_bytes()

    @cached_property
    def predictor(self):
        from inference_server import artifact

        return artifact.load_predictor(self.model_dir)

    @cached_property
    def image(self) -> np.ndarray:
        from inference_server import decoding

        return decoding.decode_image(
            self.jpeg, "image/jpeg", input_format=self.predictor.input_format, max_pixels=10**9
        )

    @cached_property
    def detections(self):
        return self.predictor(self.image)  # also the in-process warm-up, as the server does its own

    def describe_image(self) -> str:
        height, width = self.image.shape[:2]
        return f"{self.photo.name} {width}×{height}, {len(self.detections)} instances"

    def start_server(self, label: str, env: Mapping[str, str] | None = None) -> Server:
        return Server.start(self.model_dir, self.out_dir / f"{self.name}-{label}.server.log", env)


def heap_policy() -> HeapPolicy:
    """HEAP_POLICY as the servers started here read it (validated by their own settings), so the
    benchmark's in-process side can run under the same one."""
    from inference_server.settings import Settings

    return Settings.from_env(os.environ).heap_policy


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="JPEG sent to every backend")
    parser.add_argument("--pairs", type=int, default=10, help="interleaved served/direct pairs (default 10)")
    parser.add_argument("--encode-repeats", type=int, default=20, help="timed encodes per path (default 20)")
