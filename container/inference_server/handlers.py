"""The four handler functions of the SageMaker inference toolkit, and how an artifact overrides them.

    model_fn(model_dir)                    -> model          (once, at start-up)
    input_fn(body, content_type[, ctx])    -> data           decode: decoding.decode_image
    predict_fn(data, model[, ctx])         -> prediction     predict: the one model copy
    output_fn(prediction, accept[, ctx])   -> body | (body, content_type)   encode: response

The artifact's optional code/inference.py may define any of them; each one it defines replaces
the default, as in the toolkit. A user function receives the request context as an extra last
argument only when its signature has room for it (toolkit semantics too).

Whatever a user function raises fails its one request (or the load), never the server: a
SystemExit, KeyboardInterrupt or other BaseException becomes UserCodeAborted, an Exception like any
other. What output_fn returns is checked before it is sent (InvalidHandlerResult names the handler).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from inference_server import artifact
from inference_server.backends.base import Detections
from inference_server.content_types import first_concrete, negotiate
from inference_server.decoding import decode_image
from inference_server.errors import InvalidHandlerResult, UserCodeAborted
from inference_server.request_options import RequestOptions
from inference_server.response import detections_document, encode_json

HANDLER_NAMES = ("model_fn", "input_fn", "predict_fn", "output_fn")


@dataclass
class RequestContext:
    """What a request's handlers may need besides their data; built by the server per request."""

    request_id: str
    content_type: str
    accept: str
    custom_attributes: str  # raw X-Amzn-SageMaker-Custom-Attributes, for user handlers
    max_image_pixels: int
    input_format: str = "BGR"  # the model's channel order (detectron2's INPUT.FORMAT default)
    class_names: tuple[str, ...] = ()
    options: RequestOptions = field(default_factory=RequestOptions)
    # The server's memory admission, called with the image's width and height from its header before
    # it is decoded (decoding.decode_image's on_size); raises to refuse the image.
    on_image_size: Callable[[int, int], None] | None = None


def default_model_fn(model_dir: str) -> Any:
    return artifact.load_predictor(Path(model_dir))


def default_input_fn(body: bytes, content_type: str, context: RequestContext) -> np.ndarray:
    return decode_image(
        body,
        content_type,
        input_format=context.input_format,
        max_pixels=context.max_image_pixels,
        on_size=context.on_image_size,
    )


def default_predict_fn(data: np.ndarray, model: Any, context: RequestContext) -> Detections:
    return model(data)


def default_output_fn(prediction: Detections, accept: str, context: RequestContext) -> tuple[bytes, str]:
    response_type = negotiate(accept)
    document = detections_document(prediction, context.class_names, context.options)
    return encode_json(document), response_type


DEFAULTS: dict[str, Callable[..., Any]] = {
    "model_fn": default_model_fn,
    "input_fn": default_input_fn,
    "predict_fn": default_predict_fn,
    "output_fn": default_output_fn,
}


def _call_with_optional_context(function: Callable[..., Any], context: RequestContext, *args: Any) -> Any:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return function(*args)
    accepts_more = any(p.kind is p.VAR_POSITIONAL for p in parameters) or len(parameters) > len(args)
    return function(*args, context) if accepts_more else function(*args)


def _contained(name: str, function: Callable[..., Any], *args: Any) -> Any:
    """function(*args), with a BaseException that is not an Exception turned into UserCodeAborted:
    raised on a codec or model thread, a SystemExit would otherwise reach the event loop and stop it."""
    try:
        return function(*args)
    except Exception:
        raise
    except BaseException as error:
        raise UserCodeAborted(f"{name} raised {type(error).__name__}: {error}") from error


def _is_header_value(value: str) -> bool:
    """Visible ASCII and inner spaces only: what h11 sends (anything else, CR/LF above all, would drop
    the connection or split the response)."""
    return (
        bool(value) and value == value.strip() and all(" " <= char <= "~" or char == "\t" for char in value)
    )


def _response_body(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise InvalidHandlerResult(
        f"output_fn returned a body of type {type(body).__name__}; it must be bytes, bytearray, "
        "memoryview or str, alone or as (body, content_type)"
    )


@dataclass(frozen=True)
class Handlers:
    """The composed handler functions: defaults, with the user's overrides in their place."""

    model_fn: Callable[..., Any]
    input_fn: Callable[..., Any]
    predict_fn: Callable[..., Any]
    output_fn: Callable[..., Any]
    overridden: frozenset[str] = frozenset()

    @classmethod
    def compose(cls, user_module: ModuleType | None) -> Handlers:
        chosen = dict(DEFAULTS)
        overridden = set()
        for name in HANDLER_NAMES:
            function = getattr(user_module, name, None) if user_module is not None else None
            if callable(function):
                chosen[name] = function
                overridden.add(name)
        return cls(**chosen, overridden=frozenset(overridden))

    @property
    def default_output(self) -> bool:
        """True when responses are ours, so the Accept header and custom attributes can be checked
        before the body is read (a user's output_fn may accept other formats and options)."""
        return "output_fn" not in self.overridden

    def load_model(self, model_dir: Path) -> Any:
        return _contained("model_fn", self.model_fn, str(model_dir))

    def decode(self, body: bytes, context: RequestContext) -> Any:
        return _contained(
            "input_fn", _call_with_optional_context, self.input_fn, context, body, context.content_type
        )

    def predict(self, data: Any, model: Any, context: RequestContext) -> Any:
        return _contained("predict_fn", _call_with_optional_context, self.predict_fn, context, data, model)

    def encode(self, prediction: Any, context: RequestContext) -> tuple[bytes, str]:
        result = _contained(
            "output_fn", _call_with_optional_context, self.output_fn, context, prediction, context.accept
        )
        if not isinstance(result, tuple):
            return _response_body(result), first_concrete(context.accept)
        if len(result) != 2:
            raise InvalidHandlerResult(
                f"output_fn returned a tuple of {len(result)} items; it must return a body or "
                "(body, content_type)"
            )
        body, response_type = result
        if not isinstance(response_type, str) or not _is_header_value(response_type):
            shown = repr(response_type) if isinstance(response_type, str) else type(response_type).__name__
            raise InvalidHandlerResult(
                f"output_fn returned content type {shown[:100]}; it must be a str that is a valid HTTP "
                "header value (visible ASCII, no CR or LF)"
            )
        return _response_body(body), response_type
