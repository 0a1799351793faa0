"""Content negotiation, both ways: the media type of a request's Content-Type, and the response
type an Accept header allows."""

from __future__ import annotations

from inference_server.errors import NotAcceptable

JSON = "application/json"


def media_type(header: str | None) -> str:
    """`image/jpeg; charset=binary` -> `image/jpeg`: parameters never change how a body decodes."""
    return (header or "").split(";", 1)[0].strip().lower()


def negotiate(accept: str | None) -> str:
    """The response media type for an Accept header: JSON, or 406 when the caller excludes it."""
    if not accept or not accept.strip():
        return JSON
    for media_range in accept.split(","):
        if media_type(media_range) in (JSON, "application/*", "*/*"):
            return JSON
    raise NotAcceptable(f"Accept {accept!r} cannot be met; responses are {JSON}")


def first_concrete(accept: str) -> str:
    """A user output_fn that returns only a body answers in the first media type the caller named."""
    first = media_type(accept.split(",", 1)[0])
    return first if first and "*" not in first else JSON
