"""Typed serving errors and the one registry that maps them to HTTP statuses.

Decoders, option parsing and the server raise these; `app.py` turns them into a JSON body
``{"error": {"code", "message", "request_id"}}`` with the registered status. Anything else that
escapes a request is an internal fault: 500, logged with its request id, no details to the caller
(SageMaker passes the body on to the client as OriginalMessage, and clients retry 5xx).
"""

from __future__ import annotations

from dataclasses import dataclass


class ServingError(Exception):
    """An error the caller can act on; its message names what was wrong."""

    def __init__(self, message: str = "", *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        # Seconds after which a retry may succeed: the Retry-After header and the body's retry_after_s.
        self.retry_after_s = retry_after_s


class InvalidInput(ServingError):
    """The body cannot be decoded into an image (corrupt, wrong shape, bad JSON or base64)."""


class InvalidOption(ServingError):
    """A per-request option in X-Amzn-SageMaker-Custom-Attributes is unknown or out of range."""


class NotAcceptable(ServingError):
    """The Accept header asks for a response format the server cannot produce."""


class PayloadTooLarge(ServingError):
    """The body exceeds the mode's request-size limit."""


class BodyIncomplete(ServingError):
    """The body stopped arriving before it was complete (e.g. a Content-Length larger than what was sent)."""


class ReadTimedOut(ServingError):
    """The headers or the body took longer than READ_TIMEOUT_S to arrive (e.g. a body at 1 byte/s)."""


class ImageTooLarge(PayloadTooLarge):
    """The image header declares more pixels than MAX_IMAGE_PIXELS (decompression-bomb guard)."""


class InsufficientMemory(ServingError):
    """The image needs more memory to run than the container has for one request (see memory.py):
    it could never run here, so it is refused before it is decoded."""


class UnsupportedMediaType(ServingError):
    """The Content-Type has no decoder."""


class ModelNotReady(ServingError):
    """The model is still loading or warming up."""


class ModelUnhealthy(ServingError):
    """No model copy can serve: each is hung or out of service after repeated internal errors."""


class RequestTimedOut(ServingError):
    """The request waited or ran longer than REQUEST_TIMEOUT_S (queued behind other inferences)."""


class Overloaded(ServingError):
    """Refused at admission: the queue ahead means the request cannot finish within its limit."""


class ShuttingDown(ServingError):
    """The server received SIGTERM: it admits nothing new, and answers what it cannot finish within the
    grace period with this instead of leaving it for the platform to cut off."""


class InvalidHandlerResult(ServingError):
    """A user handler (code/inference.py) returned what the server cannot send: output_fn's body must be
    bytes-like or str, its content type a str that is a valid header value."""


class UserCodeAborted(Exception):
    """A user handler raised SystemExit, KeyboardInterrupt or another BaseException that is not an
    Exception: turned into this so that it fails the one request (a 500), never the server."""


@dataclass(frozen=True)
class ErrorKind:
    status: int
    code: str
    # True when the error belongs to one record's content, so batch transform may answer it with a
    # per-record error object instead of failing the whole input file.
    record_error: bool = False


ERROR_REGISTRY: dict[type[ServingError], ErrorKind] = {
    InvalidInput: ErrorKind(400, "invalid_input", record_error=True),
    InvalidOption: ErrorKind(400, "invalid_option"),
    NotAcceptable: ErrorKind(406, "not_acceptable"),
    ImageTooLarge: ErrorKind(413, "image_too_large", record_error=True),
    PayloadTooLarge: ErrorKind(413, "payload_too_large", record_error=True),
    BodyIncomplete: ErrorKind(408, "body_incomplete"),
    InsufficientMemory: ErrorKind(413, "insufficient_memory", record_error=True),
    UnsupportedMediaType: ErrorKind(415, "unsupported_media_type", record_error=True),
    ModelNotReady: ErrorKind(503, "model_not_ready"),
    ModelUnhealthy: ErrorKind(503, "model_unhealthy"),
    RequestTimedOut: ErrorKind(503, "request_timed_out"),
    Overloaded: ErrorKind(503, "overloaded"),
    ShuttingDown: ErrorKind(503, "shutting_down"),
    ReadTimedOut: ErrorKind(408, "read_timed_out"),
    InvalidHandlerResult: ErrorKind(500, "invalid_handler_result"),
}
INTERNAL_ERROR = ErrorKind(500, "internal_error")


def error_kind(error: BaseException) -> ErrorKind:
    """The registered kind of the error's most specific class; INTERNAL_ERROR for anything else."""
    for cls in type(error).__mro__:
        if cls in ERROR_REGISTRY:
            return ERROR_REGISTRY[cls]
    return INTERNAL_ERROR


def error_document(kind: ErrorKind, message: str, request_id: str, retry_after_s: int | None = None) -> dict:
    error: dict[str, str | int] = {"code": kind.code, "message": message, "request_id": request_id}
    if retry_after_s is not None:
        # SageMaker passes the body on (OriginalMessage) but not the Retry-After header.
        error["retry_after_s"] = retry_after_s
    return {"error": error}


def first_line(error: BaseException) -> str:
    """An exception as one line: libraries (torch.load, yacs) raise multi-line messages."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
