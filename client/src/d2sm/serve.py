"""`serve`: the container's inference server on this machine, in the foreground, with its logs.

Without Docker it runs `python -m inference_server` from the repository's container/ folder (found
from the current folder upwards, or --container-dir) in a python that has the serving packages
(--python; default this one), with the environment the image sets. With --docker it runs the built
image itself. Either way the model is a model.tar.gz (extracted first, as SageMaker does into
/opt/ml/model) or an extracted directory, and `d2sm invoke --url` talks to it as to an endpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from d2sm_contract import INFERENCE_MODE_ENV, LOG_FORMAT_ENV, LOG_FORMAT_TEXT

from . import validate
from .errors import CliError
from .progress import emit, note

DEFAULT_PORT = 8080
# What container/Dockerfile sets (ENV) in both images, besides PATH.
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
# The server's imports, checked first so a missing one is one line instead of a traceback.
SERVER_IMPORTS = "import uvicorn, starlette, pydantic, numpy, PIL, pycocotools, torch, torchvision"
MODES = ("realtime", "serverless", "async", "batch")
IMAGE_MODEL_DIR = "/opt/ml/model"
CONTAINER_PORT = 8080


def model_directory(model: Path, scratch: Path) -> Path:
    """An extracted artifact directory, unpacking a model.tar.gz the way SageMaker does."""
    if model.is_dir():
        if not (model / validate.METADATA_FILE).is_file():
            raise CliError(
                f"{model} has no {validate.METADATA_FILE}: give a model.tar.gz or an extracted artifact"
            )
        return model
    if not model.exists():
        raise CliError(f"{model} does not exist")
    target = scratch / "model"
    try:
        with tarfile.open(model, "r:gz") as archive:
            archive.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise CliError(f"{model} is not a readable model.tar.gz: {error}") from None
    if not (target / validate.METADATA_FILE).is_file():
        raise CliError(
            f"{model} has no {validate.METADATA_FILE} at its top: build it with inference_server.package"
        )
    return target


def server_environment(args: argparse.Namespace) -> dict[str, str]:
    """The settings the server reads (container/inference_server/settings.py): --mode, plain-text
    logs for the terminal, and --env (which wins)."""
    env = {INFERENCE_MODE_ENV: args.mode, LOG_FORMAT_ENV: LOG_FORMAT_TEXT}
    for item in args.env or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--env {item!r} must be NAME=VALUE")
        env[name] = value
    return env


def run_process(command: list[str], env: dict[str, str] | None) -> int:
    """Run in the foreground with its output on ours; Ctrl-C and SIGTERM are passed on to it, and
    its exit status is ours (the server stops gracefully: in-flight requests finish first)."""
    try:
        # Its own process group: a terminal Ctrl-C reaches only us, and we pass it on once (uvicorn
        # takes a second SIGINT as "exit now, drop the requests in flight").
        process = subprocess.Popen(command, env=env, process_group=0)
    except OSError as error:
        raise CliError(f"cannot run {command[0]}: {error.strerror or error}") from None
    forward = lambda signum, frame: process.send_signal(signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def serve_local(args: argparse.Namespace, model_dir: Path) -> int:
    container_dir = validate.find_container_dir(args.container_dir)
    if container_dir is None:
        raise CliError(
            "serve needs the repository's container/ folder (the inference server): run it from a clone "
            "or pass --container-dir; or use --docker with a built image"
        )
    python = args.python or sys.executable
    env = {**validate.container_env(container_dir), **IMAGE_ENV, **server_environment(args)}
    probe = subprocess.run([python, "-c", SERVER_IMPORTS], env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        raise CliError(
            f"{python} lacks the serving packages ({validate.last_line(probe.stderr)}): "
            f"pip install -r {container_dir / 'requirements.txt'} torch torchvision, or pass --python"
        )
    validate.check_metadata(model_dir, container_dir=container_dir, python=python)
    url = f"http://{args.host}:{args.port}"
    emit({"url": url, "model_dir": str(model_dir), "mode": args.mode}, None)
    note(
        f"serving {model_dir} at {url} (mode {args.mode}); Ctrl-C stops it. "
        f"Try: d2sm invoke photo.jpg --url {url}"
    )
    command = [python, "-m", "inference_server", "serve", "--host", args.host, "--port", str(args.port)]
    return run_process([*command, "--model-dir", str(model_dir)], env)


def serve_docker(args: argparse.Namespace, model_dir: Path) -> int:
    docker = shutil.which("docker")
    if docker is None:
        raise CliError("--docker: no docker command on PATH")
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        raise CliError(f"--docker: no Docker daemon answers ({validate.last_line(info.stderr)})")
    found = subprocess.run([docker, "image", "inspect", args.image], capture_output=True, text=True)
    if found.returncode != 0:
        raise CliError(
            f"--docker: no image {args.image}: build it with "
            f"`docker build --target cpu -t {args.image} container/` or pass --image"
        )
    url = f"http://{args.host}:{args.port}"
    command = [docker, "run", "--rm", "--init", "-p", f"{args.host}:{args.port}:{CONTAINER_PORT}"]
    command += ["-v", f"{model_dir.resolve()}:{IMAGE_MODEL_DIR}:ro"]
    for name, value in server_environment(args).items():
        command += ["-e", f"{name}={value}"]
    if args.gpus:
        command += ["--gpus", args.gpus]
    emit({"url": url, "model_dir": str(model_dir), "mode": args.mode, "image": args.image}, None)
    note(f"serving {model_dir} in {args.image} at {url} (mode {args.mode}); Ctrl-C stops it")
    return run_process([*command, args.image, "serve"], None)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="d2sm-serve-") as scratch:
        model_dir = model_directory(args.model, Path(scratch))
        code = serve_docker(args, model_dir) if args.docker else serve_local(args, model_dir)
    if code not in (0, -signal.SIGINT, 128 + signal.SIGINT, -signal.SIGTERM):
        raise CliError(f"the server exited with status {code} (its log is above)")


def add_parser(commands, common) -> None:
    srv = commands.add_parser(
        "serve",
        parents=[common],
        help="run the inference server locally on a model.tar.gz (no AWS): try it before you deploy",
        description=__doc__.splitlines()[0],
    )
    srv.add_argument("model", type=Path, help="a model.tar.gz or an extracted model directory")
    srv.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("D2SM_SERVE_PORT", DEFAULT_PORT)),
        help="port (default 8080)",
    )
    srv.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    srv.add_argument(
        "--mode",
        choices=MODES,
        default="realtime",
        help="INFERENCE_MODE: the mode's limits (default realtime)",
    )
    srv.add_argument(
        "--env",
        action="append",
        metavar="NAME=VALUE",
        help="a server setting, e.g. MODEL_COPIES=2 (repeatable)",
    )
    srv.add_argument(
        "--container-dir", type=Path, help="folder holding inference_server (default ./container upwards)"
    )
    srv.add_argument("--python", help="python with torch and the serving packages (default: this one)")
    srv.add_argument(
        "--docker", action="store_true", help="run the built image instead (needs a Docker daemon)"
    )
    srv.add_argument(
        "--image",
        default="detectron2-sagemaker:cpu",
        help="image for --docker (default detectron2-sagemaker:cpu)",
    )
    srv.add_argument("--gpus", help="with --docker: passed to `docker run --gpus` (e.g. all)")
    srv.set_defaults(handler=run)
