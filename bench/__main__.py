"""`python -m bench` (or `make bench`): every table, for every backend available, from one run.

    PYTHONPATH=container python -m bench [--backends torchvision,detectron2] [--pairs 10] [--photo P]
    PYTHONPATH=container python -m bench --model-dir MODEL_DIR   # your own extracted model.tar.gz

Each backend serves an artifact with seeded random weights built like the test artifacts but at the
stock serving sizes (shorter side 800, longer at most 1333) with a score threshold of 0 and 100
detections, so every photo yields the 100 full-size masks a real model returns at most; artifacts
are cached in bench-out/. A table is one module with TITLE and run(); add it to TABLES.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from pathlib import Path

from bench import cold_start, cpu_runtime, encoding, heap, memory, overload, serving
from bench.common import REPO_ROOT, Backend, add_common_arguments, heap_policy

TABLES = [serving, encoding, heap, cold_start, memory, cpu_runtime]
BACKENDS = ("torchvision", "detectron2")
SERVING_SIZES = {
    "min_size": 800,
    "max_size": 1333,
    "score_threshold": 0.0,
    "detections_per_image": 100,
}


def build_artifact(backend: str, out_dir: Path) -> Path:
    """The backend's benchmark artifact, built once through the packaging code and cached."""
    from tests.container import artifacts

    dest = out_dir / "artifacts" / backend
    if (dest / "model" / "metadata.json").is_file():
        return dest / "model"
    builder = {
        "torchvision": artifacts.build_torchvision_artifact,
        "detectron2": artifacts.build_detectron2_artifact,
    }[backend]
    return builder(dest, **SERVING_SIZES)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (
        f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    # The in-process predictor runs under the heap policy the servers use by default, so "served vs
    # direct" compares serving with the model, not two allocators (the heap table compares those).
    from inference_server import allocator

    allocator.apply(heap_policy())
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: both)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-out", help="artifacts and server logs")
    parser.add_argument("--model-dir", type=Path, help="benchmark this extracted artifact instead")
    parser.add_argument(
        "--tables",
        default=",".join(table.__name__.rsplit(".", 1)[1] for table in TABLES),
        help="comma-separated subset of the tables, in their order (default: all)",
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="also the overload, copies and fp32-vs-autocast tables (bench/overload.py; minutes per backend)",
    )
    add_common_arguments(parser)
    overload.add_arguments(parser)
    memory.add_arguments(parser)
    options = parser.parse_args()
    tables = {table.__name__.rsplit(".", 1)[1]: table for table in TABLES}
    # cpu-runtime and cpu_runtime both name bench/cpu_runtime.py.
    chosen = [name.strip().replace("-", "_") for name in options.tables.split(",") if name.strip()]
    unknown_tables = sorted(set(chosen) - set(tables))
    if unknown_tables:
        parser.error(f"unknown table(s) {', '.join(unknown_tables)}; allowed: {', '.join(tables)}")
    options.tables = [tables[name] for name in chosen]

    if options.model_dir is not None:
        from inference_server import artifact

        name = f"{artifact.read_metadata(options.model_dir).backend} ({options.model_dir.name})"
        backends = [Backend(name, options.model_dir, options.photo, options.out)]
        run(backends, [], options)
        return
    wanted = [name.strip() for name in options.backends.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; allowed: {', '.join(BACKENDS)}")
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    backends = [
        Backend(name, build_artifact(name, options.out), options.photo, options.out)
        for name in wanted
        if name not in missing
    ]
    if not backends:
        raise SystemExit(f"none of the backends {', '.join(wanted)} is installed")
    run(backends, missing, options)


def run(backends: list[Backend], missing: list[str], options: argparse.Namespace) -> None:
    started = time.perf_counter()
    print(f"## Benchmark: {', '.join(b.name for b in backends)} on {options.photo.name}\n")
    print(f"- machine at the start: {machine()}")
    for name in missing:
        print(f"- {name}: not installed here, skipped")
    print()
    for table in options.tables:
        print(table.run(backends, options).markdown(), flush=True)
    if options.overload:
        for backend in backends:
            print(f"## Overload and model copies: {backend.name}\n", flush=True)
            overload.tables(backend.model_dir, backend.photo, options)
    print(
        f"- machine at the end: load average {os.getloadavg()[0]:.1f}; "
        f"whole run {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
