"""CPU runtime: eager torch against CPU_RUNTIME=openvino at fp32 and bf16, on the same photo.

Latency is per image, in this process, with the three predictors called in turn each round
(interleaved, so a busy machine slows all of them alike). Agreement compares each runtime's
detections with eager's on the photo (tests/container/agreement.py: same class, box IoU >= 0.9).
Cold start is the real server's start -> first /ping 200: eager, and openvino from an artifact that
carries its conversion (what `package --cpu-runtime openvino` builds), started in turn for
COLD_START_ROUNDS rounds (median); and once, openvino converting at its first start into an empty
cache.

The "eager, nudged photo" row is eager against itself on the photo with 1 % of its pixels one grey
level brighter: a change no one can see. How many instances that moves says how close the model's
detections sit to its thresholds and to each other, which is the scale to read the runtimes' matched
counts against.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.common import Backend, Server, Table, ms

if TYPE_CHECKING:
    from tests.container.agreement import Agreement

TITLE = "CPU runtime"
RUNTIME = "openvino"
COLD_START_ROUNDS = 3
NUDGED_FRACTION = 0.01  # of the photo's pixels, each one grey level brighter


def _nudged(image: np.ndarray) -> np.ndarray:
    """The photo with NUDGED_FRACTION of its pixels one grey level brighter (seeded: the same every run)."""
    chosen = np.random.default_rng(0).random(image.shape[:2]) < NUDGED_FRACTION
    nudged = image.copy()
    nudged[chosen] = np.minimum(image[chosen].astype(np.int16) + 1, 255).astype(image.dtype)
    return nudged


def _agreement_cells(agreement: Agreement) -> list[str]:
    return [
        f"{agreement.matched}/{agreement.reference}",
        f"{agreement.max_box_px:.3f} px",
        f"{agreement.max_score:.2e}",
        f"{agreement.min_mask_iou:.4f}",
    ]


def _packaged_copy(backend: Backend, predictor: object) -> Path:
    """The backend's artifact with its conversion stored inside, as packaging writes it."""
    from inference_server import cpu_runtime
    from inference_server.artifact_format import ArtifactError

    destination = backend.out_dir / "cpu-runtime" / f"{backend.name}-packaged"
    names = [network.name for network in cpu_runtime.networks_of(predictor)]
    try:  # reused while it holds what this code converts from these weights
        cpu_runtime.read_manifest(
            destination / cpu_runtime.RUNTIME_DIR, cpu_runtime.weights_digest(backend.model_dir), names
        )
    except (ArtifactError, OSError):
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(backend.model_dir, destination)
        cpu_runtime.package(predictor, destination)
    return destination


def _ready_s(backend: Backend, label: str, model_dir: Path, env: dict[str, str]) -> float:
    server = Server.start(model_dir, backend.out_dir / f"{backend.name}-{label}.server.log", env)
    server.stop()
    return server.ready_s


def run(backends: list[Backend], options: argparse.Namespace) -> Table:
    table = Table(
        TITLE,
        [
            "backend",
            "runtime",
            "p50 per image",
            "speed-up",
            "cold start (/ping 200)",
            "matched",
            "max box Δ",
            "max score Δ",
            "min mask IoU",
        ],
    )
    if importlib.util.find_spec("openvino") is None:
        table.notes.append(
            "openvino is not installed here: pip install openvino (requirements-dev.txt has it)"
        )
        return table
    from inference_server import artifact, cpu_runtime
    from inference_server.settings import CpuPrecision
    from tests.container.agreement import compare

    # A property of the CPU, not of the backend: asked once.
    precisions = [CpuPrecision.FP32]
    try:
        cpu_runtime.check_precision(CpuPrecision.BF16)
        precisions.append(CpuPrecision.BF16)
    except cpu_runtime.RuntimeUnavailable as error:
        table.notes.append(f"bf16 n/a ({error})")
    summaries: dict[str, str] = {}
    for backend in backends:
        predictors = {"eager": backend.predictor}
        packaged = _packaged_copy(backend, artifact.load_predictor(backend.model_dir))
        for precision in precisions:
            predictor = artifact.load_predictor(packaged)
            cpu_runtime.apply(predictor, packaged, precision)
            predictors[str(precision)] = predictor
        image = backend.image
        samples: dict[str, list[float]] = {name: [] for name in predictors}
        detections = {}
        for name, predictor in predictors.items():  # warm-up, untimed
            detections[name] = predictor(image)
        for _ in range(options.pairs):
            for name, predictor in predictors.items():
                started = time.perf_counter()
                detections[name] = predictor(image)
                samples[name].append(time.perf_counter() - started)
        sensitivity = compare(detections["eager"], backend.predictor(_nudged(image)))
        starts: dict[str, tuple[Path, dict[str, str]]] = {"eager": (backend.model_dir, {})}
        for precision in precisions:
            starts[str(precision)] = (packaged, {"CPU_RUNTIME": RUNTIME, "CPU_PRECISION": str(precision)})
        start_samples: dict[str, list[float]] = {name: [] for name in starts}
        for _ in range(COLD_START_ROUNDS):
            for name, (model_dir, env) in starts.items():
                start_samples[name].append(_ready_s(backend, f"cpu-runtime-{name}", model_dir, env))
        cold = {name: statistics.median(values) for name, values in start_samples.items()}
        cache = backend.out_dir / "cpu-runtime" / f"{backend.name}-cache"
        shutil.rmtree(cache, ignore_errors=True)
        converting_s = _ready_s(
            backend,
            "cpu-runtime-convert",
            backend.model_dir,
            {"CPU_RUNTIME": RUNTIME, "CPU_RUNTIME_CACHE_DIR": str(cache)},
        )
        eager_p50 = statistics.median(samples["eager"])
        speedups: dict[str, float] = {}
        agreements = {}
        for name in predictors:
            p50 = statistics.median(samples[name])
            speedups[name] = eager_p50 / p50
            if name == "eager":
                table.rows.append(
                    [backend.name, "eager (torch)", ms(p50), "1.00×", f"{cold['eager']:.1f} s"] + ["–"] * 4
                )
                table.rows.append(
                    [backend.name, "eager, nudged photo", "–", "–", "–"] + _agreement_cells(sensitivity)
                )
                continue
            agreement = agreements[name] = compare(detections["eager"], detections[name])
            table.rows.append(
                [
                    backend.name,
                    f"{RUNTIME} {name}",
                    ms(p50),
                    f"{speedups[name]:.2f}×",
                    f"{cold[name]:.1f} s ({cold[name] / cold['eager'] - 1:+.0%})",
                ]
                + _agreement_cells(agreement)
            )
        table.notes.append(
            f"{backend.name}: {backend.describe_image()}; {options.pairs} interleaved rounds; cold start "
            f"median of {COLD_START_ROUNDS} interleaved starts; first start converting into an empty "
            f"cache: {converting_s:.1f} s ({converting_s / cold['eager'] - 1:+.0%} vs eager), later starts "
            "read the cache"
        )
        fp32 = agreements[str(CpuPrecision.FP32)]
        bf16 = f"bf16 {speedups['bf16']:.2f}x" if "bf16" in speedups else "bf16 n/a"
        summaries[backend.name] = (
            f"cpu runtime {RUNTIME}: fp32 {speedups['fp32']:.2f}x, {bf16} vs eager; "
            f"fp32 matched {fp32.matched}/{fp32.reference}, min mask IoU {fp32.min_mask_iou:.3f}"
        )
    table.notes += [
        "matched: eager's instances found again (same class, box IoU ≥ 0.9); Δ and IoU over matched pairs",
        f"eager, nudged photo: eager against itself with {NUDGED_FRACTION:.0%} of the photo's pixels one "
        "grey level brighter, the scale for reading the matched counts",
    ]
    # The last line: detectron2's when it ran (the model the option is for), else the only backend's.
    last = "detectron2" if "detectron2" in summaries else next(iter(summaries))
    table.notes += [f"{name}: {line}" for name, line in summaries.items() if name != last]
    table.footer.append(summaries[last])
    return table
