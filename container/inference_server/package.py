"""Build model.tar.gz from a training output, refusing a config or weights that do not load.

    python -m inference_server.package --training-dir output/ --class-names balloon --output model.tar.gz
    python -m inference_server.package --config output/config.yaml --weights output/model_final.pth \\
        --class-names balloon --code my_code/inference.py --output model.tar.gz
    python -m inference_server.package --backend torchvision --weights maskrcnn.pth \\
        --class-names balloon --min-size 800 --output model.tar.gz

The staged artifact is loaded through the server's own load_predictor before the tarball is
written, so what packages is what serves. The tarball is byte-for-byte reproducible (sorted
entries, zero mtimes and owners) so the CDK S3 asset hash changes only when the model does.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import shutil
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

from pydantic import ValidationError

from inference_server.artifact import backend_module, load_predictor
from inference_server.artifact_format import (
    CODE_DIR,
    CONFIG_FILE,
    METADATA_FILE,
    USER_MODULE_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    ArtifactMetadata,
    TorchvisionOptions,
    describe_validation_error,
)
from inference_server.settings import CpuRuntime

LAST_CHECKPOINT_FILE = "last_checkpoint"  # written by detectron2's periodic checkpointer
TORCHVISION_FLAGS = {
    "architecture": "--architecture",
    "min_size": "--min-size",
    "max_size": "--max-size",
    "score_threshold": "--score-threshold",
    "detections_per_image": "--detections-per-image",
}


def training_outputs(training_dir: Path) -> tuple[Path, Path]:
    """config.yaml and the final weights of a detectron2 training run (else its last checkpoint)."""
    weights = training_dir / WEIGHTS_FILE
    last_checkpoint = training_dir / LAST_CHECKPOINT_FILE
    if not weights.is_file() and last_checkpoint.is_file():
        weights = training_dir / last_checkpoint.read_text().strip()
    if not weights.is_file():
        raise ArtifactError(f"{training_dir} holds neither {WEIGHTS_FILE} nor a {LAST_CHECKPOINT_FILE} file")
    return training_dir / CONFIG_FILE, weights


def copy_user_code(code: Path, staging_dir: Path) -> None:
    """--code is inference.py itself, or a directory holding it (and the modules it imports)."""
    target = staging_dir / CODE_DIR
    if code.is_dir():
        shutil.copytree(code, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    elif code.is_file():
        target.mkdir()
        shutil.copyfile(code, target / USER_MODULE_FILE)
    else:
        raise ArtifactError(f"--code {code} does not exist")
    entry = target / USER_MODULE_FILE
    if not entry.is_file():
        raise ArtifactError(f"--code directory {code} has no {USER_MODULE_FILE}")
    # Compiled, not imported: its imports may only exist in the serving image.
    for module in sorted(target.rglob("*.py")):
        try:
            compile(module.read_bytes(), str(module), "exec")
        except SyntaxError as error:
            raise ArtifactError(f"{module} line {error.lineno}: {error.msg}") from None


def write_tarball(staging_dir: Path, output: Path) -> None:
    """A reproducible .tar.gz: sorted regular files, no timestamps, owners or gzip file name."""
    files = sorted(path for path in staging_dir.rglob("*") if path.is_file())
    partial = output.with_name(output.name + ".partial")
    with (
        partial.open("wb") as raw,
        # Weights barely compress; level 6 is as small as 9 here and much faster.
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as archive,
    ):
        for path in files:
            info = tarfile.TarInfo(path.relative_to(staging_dir).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as content:
                archive.addfile(info, content)
    partial.replace(output)


def build_artifact(
    output: Path,
    *,
    backend: str,
    class_names: list[str] | tuple[str, ...],
    weights: Path,
    config: Path | None = None,
    code: Path | None = None,
    torchvision_options: TorchvisionOptions | None = None,
    cpu_runtime: CpuRuntime = CpuRuntime.EAGER,
) -> Path:
    """Stage, load-check and tar an artifact; raises ArtifactError (one line) when it would not serve.

    cpu_runtime=openvino also stores the networks' OpenVINO conversion (openvino/), so that servers
    with CPU_RUNTIME=openvino compile it instead of converting at their first start."""
    output, weights = Path(output), Path(weights)
    try:
        # Validated from plain values: backend and class names come from the command line unchecked.
        metadata = ArtifactMetadata.model_validate(
            {"backend": backend, "class_names": class_names, "torchvision": torchvision_options}
        )
    except ValidationError as error:
        raise ArtifactError(describe_validation_error(error)) from None
    for path in (weights, config):
        if path is not None and not Path(path).is_file():
            raise ArtifactError(f"{path} does not exist")
    if not output.parent.is_dir():
        raise ArtifactError(f"--output directory {output.parent} does not exist")
    module = backend_module(metadata.backend)  # fails first when the backend's library is missing
    with tempfile.TemporaryDirectory(prefix="model-artifact-") as staging:
        staging_dir = Path(staging)
        module.export(metadata, weights, None if config is None else Path(config), staging_dir)
        (staging_dir / METADATA_FILE).write_text(metadata.to_json())
        if code is not None:
            copy_user_code(Path(code), staging_dir)
        predictor = load_predictor(staging_dir)
        if cpu_runtime is CpuRuntime.OPENVINO:
            from inference_server import cpu_runtime as runtime

            runtime.package(predictor, staging_dir)
        write_tarball(staging_dir, output)
    return output


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad call prints one line instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m inference_server.package",
        description="Build a SageMaker model.tar.gz from a detectron2 (or torchvision) training output.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--training-dir",
        type=Path,
        help="training OUTPUT_DIR: config.yaml + model_final.pth (or last_checkpoint)",
    )
    source.add_argument("--weights", type=Path, help="weights file (.pth, or a detectron2 .pkl)")
    parser.add_argument("--config", type=Path, help="detectron2 config.yaml (with --weights)")
    parser.add_argument(
        "--class-names", nargs="+", required=True, metavar="NAME", help="one per class, in class-id order"
    )
    parser.add_argument("--backend", choices=("detectron2", "torchvision"), default="detectron2")
    parser.add_argument(
        "--code", type=Path, help="inference.py, or a directory holding it, with handler overrides"
    )
    parser.add_argument("--output", type=Path, required=True, help="where to write model.tar.gz")
    parser.add_argument(
        "--cpu-runtime",
        type=CpuRuntime,
        choices=list(CpuRuntime),
        default=CpuRuntime.EAGER,
        help="openvino: also store the OpenVINO conversion that CPU_RUNTIME=openvino serves (default eager)",
    )
    tv = parser.add_argument_group("torchvision backend (detectron2 reads these from its config)")
    tv.add_argument("--architecture", choices=("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"))
    tv.add_argument("--min-size", type=int, help="short edge at test time (default 800)")
    tv.add_argument("--max-size", type=int, help="long edge cap at test time (default 1333)")
    tv.add_argument("--score-threshold", type=float, help="default 0.05")
    tv.add_argument("--detections-per-image", type=int, help="default 100")
    parser.add_argument("--verbose", action="store_true", help="show library logs and warnings")
    args = parser.parse_args(argv)
    given = {field: getattr(args, field) for field in TORCHVISION_FLAGS if getattr(args, field) is not None}
    if args.backend == "detectron2" and given:
        flags = ", ".join(TORCHVISION_FLAGS[field] for field in given)
        parser.error(f"{flags} apply to the torchvision backend only (detectron2 reads its config)")
    if args.training_dir is not None and args.config is not None:
        parser.error("--config goes with --weights; --training-dir already names its config.yaml")
    if args.backend == "detectron2" and args.weights is not None and args.config is None:
        parser.error("--weights needs --config for the detectron2 backend")
    args.torchvision_options = given
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        # Libraries log and warn on stderr while loading; a failure must read as one line.
        logging.basicConfig(level=logging.ERROR)
        warnings.simplefilter("ignore")
    started = time.perf_counter()
    try:
        config, weights = args.config, args.weights
        if args.training_dir is not None:
            config, weights = training_outputs(args.training_dir)
            if args.backend == "torchvision":
                config = None
        try:
            options = (
                TorchvisionOptions(**args.torchvision_options) if args.backend == "torchvision" else None
            )
        except ValidationError as error:
            raise ArtifactError(describe_validation_error(error)) from None
        build_artifact(
            args.output,
            backend=args.backend,
            class_names=args.class_names,
            weights=weights,
            config=config,
            code=args.code,
            torchvision_options=options,
            cpu_runtime=args.cpu_runtime,
        )
    except ArtifactError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    size_mb = args.output.stat().st_size / 1e6
    print(
        f"wrote {args.output} ({size_mb:.1f} MB, {args.backend}, {len(args.class_names)} classes)"
        f" in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
