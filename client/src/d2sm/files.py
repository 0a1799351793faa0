"""Which files are images, where each image's result goes, what counts as an error result, and
file reads and writes that fail as one line."""

from __future__ import annotations

import json
import os
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


def images_in(path: Path, recursive: bool = False) -> list[Path]:
    """One image, or the images inside a folder (sorted; subfolders with `recursive`; overlays
    `show` wrote are skipped)."""
    if path.is_file():
        if not is_image(path):
            raise CliError(f"{path} is not an image ({', '.join(sorted(CONTENT_TYPES))})")
        return [path]
    if path.is_dir():
        try:
            candidates = path.rglob("*") if recursive else path.iterdir()
            found = sorted(p for p in candidates if is_image(p) and p.is_file())
        except OSError as error:
            raise CliError(f"cannot list {path}: {error.strerror or error}") from None
        if not found:
            where = f"{path} or its subfolders" if recursive else f"{path} (--recursive for subfolders)"
            raise CliError(f"{where} holds no image ({', '.join(sorted(CONTENT_TYPES))})")
        return found
    raise CliError(f"{path} does not exist")


def content_type(image: Path) -> str:
    return CONTENT_TYPES[image.suffix.lower()]


def result_path(image: Path, root: Path | None = None, out_dir: Path | None = None) -> Path:
    """photo.jpg -> photo.jpg.json (the full name, so photo.jpg and photo.png never collide); with
    `out_dir`, the same name under out_dir at the image's place relative to `root`."""
    name = image.name + RESULT_SUFFIX
    if out_dir is None:
        return image.with_name(name)
    relative = image.parent.relative_to(root) if root is not None and root.is_dir() else Path()
    return out_dir / relative / name


def image_for(result: Path) -> Path:
    return result.with_name(result.name[: -len(RESULT_SUFFIX)])


def read_bytes(path: Path, what: str = "") -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {what}{path}: {error.strerror or error}") from None


def write_bytes(path: Path, data: bytes) -> Path:
    """Write through a temporary file and rename, so an interrupted write never leaves half a file
    that a rerun would take for a finished result."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from None
    return path


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


def save_result(image: Path, document: dict, target: Path | None = None) -> Path:
    target = target or result_path(image)
    return write_bytes(target, (json.dumps(document, indent=1) + "\n").encode())


def read_json(path: Path, what: str = "") -> object:
    try:
        return json.loads(read_bytes(path, what))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CliError(f"{path} is not JSON: {error}") from None
