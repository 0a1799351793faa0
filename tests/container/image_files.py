"""Build request bodies (image files, .npy, JSON) from arrays, for the codec and HTTP tests."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

# How a camera stores an upright picture for each EXIF Orientation, as PIL transposes.
# 6: stored turned 90° counter-clockwise (the viewer turns it clockwise); 8: the reverse.
STORED_FOR_ORIENTATION = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
EXIF_ORIENTATION_TAG = 0x0112


def image_bytes(
    image: Image.Image | np.ndarray, fmt: str = "PNG", orientation: int | None = None, **save_args
) -> bytes:
    """The file bytes of an image; with `orientation`, the pixels are stored turned as a camera would
    and the EXIF tag says how to turn them back upright."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if orientation is not None:
        image = image.transpose(STORED_FOR_ORIENTATION[orientation])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        save_args["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def json_body(file_bytes: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(file_bytes).decode("ascii")}).encode()


def upright_rgb(path) -> np.ndarray:
    """A photo's pixels as PIL shows it upright, HWC uint8 RGB."""
    from PIL import ImageOps

    with Image.open(path) as image:
        return np.array(ImageOps.exif_transpose(image).convert("RGB"))


def noise_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
