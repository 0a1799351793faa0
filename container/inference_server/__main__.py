"""`python -m inference_server [serve] [--host H] [--port P] [--model-dir DIR]`: one process, one model.

SageMaker starts the image as `docker run IMAGE serve`, so a leading `serve` is accepted and ignored.
Exit status: 0 after a graceful stop (SIGTERM), 1 when the model fails to load, 2 for bad settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from inference_server import allocator
from inference_server.app import create_app
from inference_server.settings import Settings, SettingsError

# Longer than the 60 s idle timeout of the load balancers in front of the container, so the server
# never closes a kept-alive connection that the platform is about to reuse.
KEEP_ALIVE_S = 75
# SageMaker sends SIGKILL about 30 s after SIGTERM: finish in-flight requests within that window.
GRACEFUL_SHUTDOWN_S = 25


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m inference_server",
        description="Serve an extracted model.tar.gz over SageMaker's inference HTTP contract.",
    )
    parser.add_argument("command", nargs="?", choices=["serve"], help="optional; SageMaker passes `serve`")
    parser.add_argument("--host", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default $SAGEMAKER_BIND_TO_PORT or 8080)")
    parser.add_argument(
        "--model-dir", type=Path, help="extracted artifact (default $MODEL_DIR or /opt/ml/model)"
    )
    return parser.parse_args(argv)


def _exit_gracefully(signum: int, frame: object) -> None:
    # uvicorn handles SIGTERM itself (stop accepting, finish in-flight requests) and then re-raises
    # it to this, the previous handler: a stop that SageMaker asked for is a success, not a crash.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, host=args.host, port=args.port, model_dir=args.model_dir)
    except SettingsError as error:
        print(f"inference_server: error: {error}", file=sys.stderr)
        return 2
    if not settings.model_dir.is_dir():
        print(
            f"inference_server: error: model directory {settings.model_dir} does not exist", file=sys.stderr
        )
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Before uvicorn, torch and the server's threads start: a thread that has allocated keeps its arena.
    allocator.apply(settings.heap_policy)

    load_failed = False

    def stop_after_load_failure() -> None:
        nonlocal load_failed
        load_failed = True
        server.should_exit = True

    app = create_app(settings, on_load_failure=stop_after_load_failure)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            lifespan="on",
            log_config=None,  # keep the logging configured above
            log_level=settings.log_level,
            access_log=False,  # SageMaker pings every few seconds; /invocations logs its own line
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    )
    signal.signal(signal.SIGTERM, _exit_gracefully)
    server.run()
    return 1 if load_failed else 0


if __name__ == "__main__":
    sys.exit(main())
