"""`python -m inference_server [serve] [--host H] [--port P] [--model-dir DIR]`: one process, one model.

SageMaker starts the image as `docker run IMAGE serve`, so a leading `serve` is accepted and ignored.

Exit status (docs/failure-behaviour.md says what SageMaker does with each):
    0  stopped by SIGTERM or SIGINT (also during the model load: the load is abandoned)
    1  the model failed to load (one line in the log says why)
    2  bad command line or settings, or no model directory (one line on stderr)
    3  the port cannot be bound (in use, or not allowed), found before the model loads
The process always exits within the grace period after SIGTERM: nothing a user handler does (a hung
model_fn, input_fn or predict_fn) can hold it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from inference_server import allocator, logs
from inference_server.app import create_app
from inference_server.http_protocol import DeadlineH11Protocol
from inference_server.model_server import ModelServer
from inference_server.settings import Settings, SettingsError

EXIT_STOPPED = 0
EXIT_LOAD_FAILED = 1
EXIT_USAGE = 2
EXIT_PORT_UNAVAILABLE = 3
# Longer than the 60 s idle timeout of the load balancers in front of the container, so the server
# never closes a kept-alive connection that the platform is about to reuse.
KEEP_ALIVE_S = 75
# SageMaker sends SIGKILL about 30 s after SIGTERM: everything is answered within this window...
GRACEFUL_SHUTDOWN_S = 25
# ...and what the model server has not answered this long after SIGTERM it answers 503 itself, so
# that uvicorn's own cut-off (a plain-text 500 without a request id) never comes.
ANSWER_WITHIN_S = GRACEFUL_SHUTDOWN_S - 3

logger = logging.getLogger("inference_server")


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


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything loads: a port in use is an error at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Rebinding a port whose last connections are in TIME_WAIT (a restart) is allowed; one that a
        # listening socket holds is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, telling the model server of SIGTERM first so that it stops admitting and
    answers what it cannot finish."""

    def __init__(self, config: uvicorn.Config, model_server: ModelServer) -> None:
        super().__init__(config)
        self.model_server = model_server

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            logger.info("received %s: stopping", signal.Signals(sig).name)
            # Called between two bytecodes of the main thread, which runs the event loop.
            loop = self.model_server.loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.model_server.begin_shutdown, ANSWER_WITHIN_S)
        super().handle_exit(sig, frame)


def _exit_gracefully(signum: int, frame: object) -> None:
    # uvicorn handles SIGTERM itself (stop accepting, answer what is in flight) and then re-raises it
    # to this, the previous handler: a stop that SageMaker asked for is a success, not a crash.
    raise SystemExit(EXIT_STOPPED)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, host=args.host, port=args.port, model_dir=args.model_dir)
    except SettingsError as error:
        print(f"inference_server: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not settings.model_dir.is_dir():
        print(
            f"inference_server: error: model directory {settings.model_dir} does not exist", file=sys.stderr
        )
        return EXIT_USAGE
    logs.configure(settings.log_level, settings.log_format)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as error:
        logger.error("cannot listen on %s:%d: %s; stopping", settings.host, settings.port, error.strerror)
        return EXIT_PORT_UNAVAILABLE
    # Before uvicorn, torch and the server's threads start: a thread that has allocated keeps its arena.
    allocator.apply(settings.heap_policy)

    load_failed = False

    def stop_after_load_failure() -> None:
        nonlocal load_failed
        load_failed = True
        server.should_exit = True

    app = create_app(settings, on_load_failure=stop_after_load_failure)
    server = Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            http=DeadlineH11Protocol.with_read_timeout(settings.read_timeout_s),
            lifespan="on",
            log_config=None,  # keep the logging configured above
            log_level=settings.log_level,
            access_log=False,  # SageMaker pings every few seconds; /invocations logs its own line
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ),
        app.state.server,
    )
    signal.signal(signal.SIGTERM, _exit_gracefully)
    try:
        server.run(sockets=[sock])
    except SystemExit as stop:  # _exit_gracefully, once uvicorn has stopped
        if stop.code not in (None, EXIT_STOPPED):
            raise
    return EXIT_LOAD_FAILED if load_failed else EXIT_STOPPED


if __name__ == "__main__":
    status = main()
    logs.flush()
    # Without the interpreter's own shutdown, which joins non-daemon threads and runs exit handlers
    # (torch's among them) while an abandoned model load or a hung user handler may still run.
    os._exit(status)
