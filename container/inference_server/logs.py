"""The server's log: one JSON object per line (LOG_FORMAT=json, the default), or plain text for reading
in a terminal (LOG_FORMAT=text).

CloudWatch turns every line of a container's output into its own event, so a multi-line traceback
printed as text becomes dozens of unrelated events; as JSON, each record is one event with its
traceback in one field, and CloudWatch Logs Insights can filter on any field (`request_id`,
`status`, `queue_wait_ms`, ...). Every field a call passes in `extra` is written beside the standard
ones (timestamp, level, logger, message).
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import sys
import threading
from types import TracebackType
from typing import Any

# Attributes every LogRecord has: what is left on a record beyond these came from `extra`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: timestamp (UTC, ISO 8601, milliseconds), level, logger, message,
    the record's extra fields, and the traceback (if any) as one string."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                document[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            document["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def configure(level: str, log_format: LogFormat) -> None:
    """Route every log record of the process (ours, uvicorn's, the libraries', warnings, uncaught
    exceptions in threads) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as threading's own hook: a thread that calls sys.exit() just ends
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = (
        (args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None
    )
    name = args.thread.name if args.thread is not None else "unknown"
    logging.getLogger("inference_server").error("uncaught exception in thread %s", name, exc_info=exc_info)


def flush() -> None:
    """Write out what the handlers hold, before the process ends without running its exit handlers."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
