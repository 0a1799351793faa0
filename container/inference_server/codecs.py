"""Decode request bodies into images and encode detections into the JSON response, as pure functions.

Decoders are looked up by Content-Type in one dispatch table (as in sagemaker-inference-toolkit's
decoder.py); every decoder yields an HWC uint8 RGB array, converted once at the end to the channel
order the predictor asks for. Masks are encoded as detectron2's COCO evaluator does
(`instances_to_coco_json`): the same COCO RLE as pycocotools gives for the full-size mask, counts as
a utf-8 string; it is computed from the mask's box crop (see encode_mask_rle).
"""

from __future__ import annotations

import base64
import binascii
import enum
import io
import json
import math
import tokenize
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageOps, UnidentifiedImageError

from inference_server.backends.base import Detections
from inference_server.errors import (
    ImageTooLarge,
    InvalidInput,
    InvalidOption,
    NotAcceptable,
    UnsupportedMediaType,
)
from inference_server.masks import Crop, PastedMasks

JSON = "application/json"
# Formats a raw or base64 image body may be in. TIFF, GIF and the rest are left out: they add
# multi-frame and exotic decoders to the attack surface for no user we know of.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
INPUT_FORMATS = ("BGR", "RGB")
# A model resizes the longer side to at most ~1333 px; past this ratio the shorter side would round
# to nothing and the model fail, so such a strip is refused as input, not computed.
MAX_ASPECT_RATIO = 100


def media_type(header: str | None) -> str:
    """`image/jpeg; charset=binary` -> `image/jpeg`: parameters never change how a body decodes."""
    return (header or "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------------------
# Decoding


def decode_image(body: bytes, content_type: str, *, input_format: str, max_pixels: int) -> np.ndarray:
    """The request body as an HWC uint8 array in `input_format` ("BGR" or "RGB") channel order."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"predictor input_format {input_format!r} is not one of {INPUT_FORMATS}")
    decoder = DECODERS.get(media_type(content_type))
    if decoder is None:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported; use one of: {', '.join(DECODERS)}"
        )
    rgb = decoder(body, max_pixels)
    return np.ascontiguousarray(rgb[:, :, ::-1]) if input_format == "BGR" else rgb


def _check_size(width: int, height: int, max_pixels: int) -> None:
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


def decode_encoded_image(body: bytes, max_pixels: int, formats: Sequence[str] = IMAGE_FORMATS) -> np.ndarray:
    """JPEG/PNG/... bytes -> RGB array, upright (EXIF orientation applied), size checked before decoding."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces PIL's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body), formats=list(formats))
        _check_size(image.width, image.height, max_pixels)
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


def decode_npy(body: bytes, max_pixels: int) -> np.ndarray:
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
    _check_size(shape[1], shape[0], max_pixels)
    buffer.seek(0)
    try:
        # allow_pickle=False: a request body must never be able to run code.
        array = np.load(buffer, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidInput(f"body is not a readable .npy array: {error}") from None
    return np.ascontiguousarray(array)


def decode_json(body: bytes, max_pixels: int) -> np.ndarray:
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
    return decode_encoded_image(encoded, max_pixels)


DECODERS: dict[str, Callable[[bytes, int], np.ndarray]] = {
    "image/jpeg": partial(decode_encoded_image, formats=("JPEG",)),
    "image/png": partial(decode_encoded_image, formats=("PNG",)),
    "application/x-image": decode_encoded_image,
    "application/x-npy": decode_npy,
    JSON: decode_json,
}


# ---------------------------------------------------------------------------------------------------
# Per-request options (X-Amzn-SageMaker-Custom-Attributes: "score_threshold=0.7,max_detections=20")


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
    values: dict[str, object] = {}
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


# ---------------------------------------------------------------------------------------------------
# Encoding


def negotiate(accept: str | None) -> str:
    """The response media type for an Accept header: JSON, or 406 when the caller excludes it."""
    if not accept or not accept.strip():
        return JSON
    for media_range in accept.split(","):
        if media_type(media_range) in (JSON, "application/*", "*/*"):
            return JSON
    raise NotAcceptable(f"Accept {accept!r} cannot be met; responses are {JSON}")


def selected_instances(detections: Detections, options: RequestOptions) -> np.ndarray:
    """Indices of the instances to return: above the threshold, best first, at most max_detections."""
    order = np.argsort(-detections.scores, kind="stable")
    order = order[detections.scores[order] >= options.score_threshold]
    return order[: options.max_detections]


# How far past its box a mask may reach and still be encoded from the box crop: detectron2 pastes
# into pixels whose centres lie in the box, torchvision into a box padded by a pixel or so. A mask
# with pixels beyond the margin (e.g. from a custom predict_fn) is encoded from the full image.
CROP_MARGIN_PX = 2


def _box_window(mask: np.ndarray, box: Sequence[float] | None) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in whole pixels: the box plus CROP_MARGIN_PX, clipped to the image; None for a
    mask that keeps the full-image path (not boolean, or no usable box)."""
    if box is None or mask.dtype != np.bool_ or mask.ndim != 2:
        return None  # other dtypes keep the full-image path, which casts them exactly as before
    left, top, right, bottom = (float(value) for value in box)
    if not all(math.isfinite(value) for value in (left, top, right, bottom)):
        return None
    height, width = mask.shape
    x0 = min(max(math.floor(left) - CROP_MARGIN_PX, 0), width)
    y0 = min(max(math.floor(top) - CROP_MARGIN_PX, 0), height)
    x1 = max(min(math.ceil(right) + CROP_MARGIN_PX, width), x0)
    y1 = max(min(math.ceil(bottom) + CROP_MARGIN_PX, height), y0)
    return x0, y0, x1, y1


def mask_window(mask: np.ndarray, box: Sequence[float] | None) -> tuple[int, int, int, int] | None:
    """The box window when it holds every pixel of the mask (so the crop encodes the whole mask);
    None when the mask must be encoded from the full image."""
    window = _box_window(mask, box)
    if window is None:
        return None
    x0, y0, x1, y1 = window
    return window if _window_holds_every_pixel(mask, window, np.count_nonzero(mask[y0:y1, x0:x1])) else None


def _window_holds_every_pixel(mask: np.ndarray, window: tuple[int, int, int, int], ones_inside: int) -> bool:
    """Whether the mask has no pixel outside the window, given how many it has inside: the one pass
    over the whole mask (a maximum above and below the window's rows, a count across them), far
    cheaper than transposing it."""
    _, y0, _, y1 = window
    # The rows above and below the window are contiguous bytes: their maximum is the fastest full scan
    # numpy has (any() is slower when it finds nothing, which is the usual case here).
    if mask[:y0].view(np.uint8).max(initial=0) or mask[y1:].view(np.uint8).max(initial=0):
        return False
    return np.count_nonzero(mask[y0:y1]) == ones_inside


def _run_lengths_from_crop(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """The COCO run lengths of the (height, width) mask that is `crop` at column x0, row y0 and zeros
    elsewhere (column-major, first run zeros), from the crop only.

    The crop's columns, each with a zero above and below, laid end to end: every run of ones then
    starts and ends inside its column, and maps to the same run in the full image's column-major
    order. A run that ends on a column's last image row and one that starts on the next column's
    first row are one run there.
    """
    padded_height = crop.shape[0] + 2
    columns = np.zeros((crop.shape[1], padded_height), bool)
    columns[:, 1:-1] = crop.T
    sequence = columns.ravel()
    changes = np.flatnonzero(sequence[1:] != sequence[:-1]) + 1
    column, row = np.divmod(changes, padded_height)
    changes = (x0 + column) * height + (y0 - 1) + row
    joined = changes[1:] == changes[:-1]
    if joined.any():
        keep = np.ones(len(changes), bool)
        keep[1:] &= ~joined
        keep[:-1] &= ~joined
        changes = changes[keep]
    if len(changes) and changes[-1] == height * width:  # a run of ones that ends with the image
        changes = changes[:-1]
    return np.diff(np.concatenate(([0], changes, [height * width])))


def encode_mask_rle(mask: np.ndarray, box: Sequence[float] | None = None) -> dict:
    """One (H, W) mask -> the COCO compressed RLE of the full-size mask, as detectron2's
    instances_to_coco_json writes it. With its box, the run lengths come from the box crop and
    pycocotools compresses them: the same string, without transposing the whole image."""
    height, width = mask.shape
    window = _box_window(mask, box)
    run_lengths = None
    if window is not None:
        x0, y0, x1, y1 = window
        run_lengths = _run_lengths_from_crop(mask[y0:y1, x0:x1], x0, y0, height, width)
    if run_lengths is not None and _window_holds_every_pixel(mask, window, int(run_lengths[1::2].sum())):
        return _compressed_rle(run_lengths, height, width)
    rle = mask_util.encode(np.asfortranarray(mask[:, :, None], dtype=np.uint8))[0]
    return {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def _compressed_rle(run_lengths: np.ndarray, height: int, width: int) -> dict:
    rle = mask_util.frPyObjects({"size": [height, width], "counts": run_lengths}, height, width)
    return {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def encode_crop_rle(crop: Crop, height: int, width: int) -> dict:
    """A pasted mask's crop -> the COCO compressed RLE of its full-size mask (the same string as
    encode_mask_rle gives for that mask), never building the full-size mask."""
    x0, y0, pixels = crop
    return _compressed_rle(_run_lengths_from_crop(pixels, x0, y0, height, width), height, width)


def encode_crop_polygons(crop: Crop) -> list[list[float]]:
    """A pasted mask's crop -> the polygons encode_polygons gives for its full-size mask."""
    x0, y0, pixels = crop
    return _contours(pixels, x0, y0)


def encode_rle(masks: np.ndarray, boxes: np.ndarray | None = None) -> list[dict]:
    """(N, H, W) masks -> COCO compressed RLE dicts that pycocotools.mask.decode turns back exactly."""
    return [encode_mask_rle(mask, None if boxes is None else boxes[i]) for i, mask in enumerate(masks)]


def encode_polygons(mask: np.ndarray, box: Sequence[float] | None = None) -> list[list[float]]:
    """A mask's outer contours as COCO polygons [x1, y1, x2, y2, ...] in pixel-centre coordinates.

    Lossy (holes dropped, as COCO polygons cannot express them); RLE is the exact form. With the
    box, contours are traced in the crop (OpenCV pads the image with zeros, so the result is the same).
    """
    window = mask_window(mask, box)
    x0, y0, x1, y1 = window if window is not None else (0, 0, mask.shape[1], mask.shape[0])
    return _contours(mask[y0:y1, x0:x1], x0, y0)


def _contours(crop: np.ndarray, x0: int, y0: int) -> list[list[float]]:
    import cv2  # imported by preload_encoders() while the model loads, not before the port is bound

    if not crop.size:
        return []
    contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # OpenCV gives integer pixel indices; +0.5 moves them to pixel centres like detectron2's GenericMask.
    return [
        ((contour.reshape(-1, 2) + (x0, y0)).reshape(-1).astype(np.float64) + 0.5).tolist()
        for contour in contours
        if len(contour) >= 3
    ]


def preload_encoders() -> None:
    """Import what polygon encoding needs now, so a missing OpenCV stops the server at start-up
    instead of failing the first polygon request, and that request does not pay for the import."""
    import cv2  # noqa: F401


def detections_document(detections: Detections, class_names: Sequence[str], options: RequestOptions) -> dict:
    """The response schema: image size and one object per instance (see README)."""
    keep = selected_instances(detections, options)
    instances = [
        {
            "class_id": int(class_id),
            "class_name": class_names[class_id] if 0 <= class_id < len(class_names) else None,
            "score": float(score),
            "box": [float(value) for value in box],
        }
        for class_id, score, box in zip(
            detections.classes[keep], detections.scores[keep], detections.boxes[keep], strict=True
        )
    ]
    masks = detections.masks
    if masks is not None and options.mask_format is not MaskFormat.NONE:
        rle = options.mask_format is MaskFormat.RLE
        key = "mask" if rle else "polygons"
        # One mask at a time: detections.masks[keep] would copy every full-size mask first.
        for instance, index in zip(instances, keep, strict=True):
            if isinstance(masks, PastedMasks):  # the backends': pasted into its crop only, now
                crop = masks.crop(int(index))
                instance[key] = (
                    encode_crop_rle(crop, detections.image_height, detections.image_width)
                    if rle
                    else encode_crop_polygons(crop)
                )
            else:  # a custom predict_fn's full-size arrays
                encode = encode_mask_rle if rle else encode_polygons
                instance[key] = encode(masks[index], detections.boxes[index])
    return {
        "image": {"height": detections.image_height, "width": detections.image_width},
        "instances": instances,
    }


def encode_json(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
