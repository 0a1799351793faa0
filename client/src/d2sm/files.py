"""Which files are images, where each image's result goes, and what counts as an error result."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CliError

# What the container decodes from a file, by suffix (its application/x-image covers WEBP and BMP).
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "application/x-image",
    ".bmp": "application/x-image",
}
RESULT_SUFFIX = ".json"
OVERLAY_SUFFIX = ".overlay.png"


def is_image(path: Path) -> bool:
    return path.suffix.lower() in CONTENT_TYPES and not path.name.endswith(OVERLAY_SUFFIX)


def images_in(path: Path) -> list[Path]:
    """One image, or the images directly inside a folder (sorted; overlays `show` wrote are skipped)."""
    if path.is_file():
        if not is_image(path):
            raise CliError(f"{path} is not an image ({', '.join(sorted(CONTENT_TYPES))})")
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and is_image(p))
        if not found:
            raise CliError(f"{path} holds no image ({', '.join(sorted(CONTENT_TYPES))})")
        return found
    raise CliError(f"{path} does not exist")


def content_type(image: Path) -> str:
    return CONTENT_TYPES[image.suffix.lower()]


def result_path(image: Path) -> Path:
    """photo.jpg -> photo.jpg.json (the full name, so photo.jpg and photo.png never collide)."""
    return image.with_name(image.name + RESULT_SUFFIX)


def image_for(result: Path) -> Path:
    return result.with_name(result.name[: -len(RESULT_SUFFIX)])


def parse_result(body: bytes, source: str) -> dict:
    """The detections document, or CliError for a body that is not one (an error object included)."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CliError(f"{source}: the answer is not JSON: {body[:80]!r}") from None
    if not isinstance(document, dict):
        raise CliError(f"{source}: the answer is not a JSON object")
    if "error" in document:
        error = document["error"]
        if isinstance(error, dict):
            detail = f"{error.get('code', 'error')}: {error.get('message', '')}"
        else:
            detail = str(error)
        raise CliError(f"{source}: the model returned an error: {detail}")
    if not isinstance(document.get("instances"), list):
        raise CliError(f"{source}: the answer has no instances list")
    return document


def save_result(image: Path, document: dict) -> Path:
    target = result_path(image)
    target.write_text(json.dumps(document, indent=1) + "\n")
    return target
