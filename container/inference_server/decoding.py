"""Request bodies into images, as pure functions, each image's size checked before it is decoded.

Decoders are looked up by Content-Type in one dispatch table (as in sagemaker-inference-toolkit's
decoder.py); every decoder yields an HWC uint8 RGB array, converted once at the end to the channel
order the predictor asks for.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import tokenize
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inference_server.content_types import JSON, media_type
from inference_server.errors import ImageTooLarge, InvalidInput, UnsupportedMediaType

# Formats a raw or base64 image body may be in. TIFF, GIF and the rest are left out: they add
# multi-frame and exotic decoders to the attack surface for no user we know of.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
INPUT_FORMATS = ("BGR", "RGB")
# A model resizes the longer side to at most ~1333 px; past this ratio the shorter side would round
# to nothing and the model fail, so such a strip is refused as input, not computed.
MAX_ASPECT_RATIO = 100


# Called with (width, height) from the image header, after the size checks and before the pixels
# are decoded: the server's memory admission (memory.py), which raises to refuse the image.
SizeCheck = Callable[[int, int], None]


def decode_image(
    body: bytes,
    content_type: str,
    *,
    input_format: str,
    max_pixels: int,
    on_size: SizeCheck | None = None,
) -> np.ndarray:
    """The request body as an HWC uint8 array in `input_format` ("BGR" or "RGB") channel order.

    on_size, when given, is called with the image's width and height before its pixels are decoded."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"predictor input_format {input_format!r} is not one of {INPUT_FORMATS}")
    decoder = DECODERS.get(media_type(content_type))
    if decoder is None:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported; use one of: {', '.join(DECODERS)}"
        )
    rgb = decoder(body, max_pixels, on_size=on_size)
    return np.ascontiguousarray(rgb[:, :, ::-1]) if input_format == "BGR" else rgb


def _check_size(width: int, height: int, max_pixels: int, on_size: SizeCheck | None = None) -> None:
    """Refuse, from the header's dimensions, what cannot be decoded or predicted: empty, too many
    pixels (the decompression-bomb guard), or a strip too thin for the model's resize."""
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image is {width}x{height}: it has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; "
            f"the limit is {max_pixels} (MAX_IMAGE_PIXELS)"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InvalidInput(
            f"image is {width}x{height}; its longer side may be at most {MAX_ASPECT_RATIO} times its shorter"
        )
    if on_size is not None:
        on_size(width, height)


def decode_encoded_image(
    body: bytes,
    max_pixels: int,
    formats: Sequence[str] = IMAGE_FORMATS,
    *,
    on_size: SizeCheck | None = None,
) -> np.ndarray:
    """JPEG/PNG/... bytes -> RGB array, upright (EXIF orientation applied), size checked before decoding."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces PIL's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(body), formats=list(formats))
        # EXIF orientation may swap the sides; the pixel count, all the checks read, is the same.
        _check_size(image.width, image.height, max_pixels, on_size)
        image.load()
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise InvalidInput(f"body is not a {' or '.join(formats)} image") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image is too large to decode; the limit is {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidInput(f"image data is corrupt or truncated: {error}") from None
    return _rgb_array(image)


def _rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode as HWC uint8 RGB: gray is replicated, alpha is dropped as detectron2's read_image
    does (so the served result matches detectron2 on the same file), 16-bit gray is scaled to 8 bits."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # PIL's own conversion clips 16-bit values at 255, turning most of the image white.
        gray = (np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def decode_npy(body: bytes, max_pixels: int, *, on_size: SizeCheck | None = None) -> np.ndarray:
    """A .npy HWC uint8 array with 3 channels in RGB order; shape checked from the header first."""
    buffer = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(buffer)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(buffer)
    # numpy parses the header text with tokenize and ast, which raise their own errors on garbage.
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as error:
        raise InvalidInput(f"body is not a .npy array: {error}") from None
    if len(shape) != 3 or shape[2] != 3 or dtype != np.uint8:
        raise InvalidInput(
            f"a .npy image must be HWC uint8 with 3 (RGB) channels; got shape {shape} dtype {dtype}"
        )
    _check_size(shape[1], shape[0], max_pixels, on_size)
    buffer.seek(0)
    try:
        # allow_pickle=False: a request body must never be able to run code.
        array = np.load(buffer, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidInput(f"body is not a readable .npy array: {error}") from None
    return np.ascontiguousarray(array)


def decode_json(body: bytes, max_pixels: int, *, on_size: SizeCheck | None = None) -> np.ndarray:
    """{"image": "<base64 of a JPEG/PNG/WEBP/BMP file>"}."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise InvalidInput('JSON nesting is too deep; the body must be {"image": "<base64>"}') from None
    except ValueError as error:  # not JSON, not UTF-8/16/32, or a number too long to convert
        raise InvalidInput(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict) or set(document) != {"image"} or not isinstance(document["image"], str):
        got = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise InvalidInput(f'a JSON body must be {{"image": "<base64-encoded image file>"}}; got {got}')
    try:
        encoded = base64.b64decode(document["image"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInput(f'"image" is not valid base64: {error}') from None
    return decode_encoded_image(encoded, max_pixels, on_size=on_size)


DECODERS: dict[str, Callable[..., np.ndarray]] = {  # (body, max_pixels, *, on_size)
    "image/jpeg": partial(decode_encoded_image, formats=("JPEG",)),
    "image/png": partial(decode_encoded_image, formats=("PNG",)),
    "application/x-image": decode_encoded_image,
    "application/x-npy": decode_npy,
    JSON: decode_json,
}
