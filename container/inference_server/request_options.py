"""Per-request options: X-Amzn-SageMaker-Custom-Attributes such as
"score_threshold=0.7,max_detections=20,mask_format=polygon", parsed into RequestOptions."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference_server.errors import InvalidOption


class MaskFormat(enum.StrEnum):
    RLE = "rle"
    POLYGON = "polygon"
    NONE = "none"


@dataclass(frozen=True)
class RequestOptions:
    score_threshold: float = 0.0  # drop instances scoring below it (the model's own threshold still applies)
    max_detections: int | None = None  # keep at most this many, highest scores first
    mask_format: MaskFormat = MaskFormat.RLE


def _parse_score_threshold(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError(raw)
    return value


def _parse_max_detections(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


_OPTION_PARSERS: dict[str, tuple[Callable[[str], object], str]] = {
    "score_threshold": (_parse_score_threshold, "a number in 0..1"),
    "max_detections": (_parse_max_detections, "an integer >= 1"),
    "mask_format": (MaskFormat, " | ".join(MaskFormat)),
}
_ALLOWED_OPTIONS = ", ".join(f"{name} ({allowed})" for name, (_, allowed) in _OPTION_PARSERS.items())


def parse_options(custom_attributes: str | None) -> RequestOptions:
    """Comma-separated key=value pairs; any unknown key or bad value is a 400 naming what is allowed."""
    values: dict[str, Any] = {}  # each parser's own type, checked by RequestOptions' fields
    for item in (custom_attributes or "").split(","):
        if not item.strip():
            continue
        key, separator, raw = (part.strip() for part in item.partition("="))
        if key not in _OPTION_PARSERS or not separator:
            raise InvalidOption(
                f"custom attribute {item.strip()!r} is not supported; allowed: {_ALLOWED_OPTIONS}"
            )
        if key in values:
            raise InvalidOption(f"custom attribute {key!r} is given more than once")
        parse, allowed = _OPTION_PARSERS[key]
        try:
            values[key] = parse(raw.lower())
        except ValueError:
            raise InvalidOption(f"custom attribute {key}={raw!r} is invalid; allowed: {allowed}") from None
    return RequestOptions(**values)
