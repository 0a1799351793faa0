"""Masks as detectron2's COCO evaluator writes them (`instances_to_coco_json`): the same COCO RLE as
pycocotools gives for the full-size mask, counts as a utf-8 string, computed from the mask's box crop
(see encode_mask_rle); or as COCO polygons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util

from inference_server.masks import Crop

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
    ones_inside = int(np.count_nonzero(mask[y0:y1, x0:x1]))
    return window if _window_holds_every_pixel(mask, window, ones_inside) else None


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
        if not _window_holds_every_pixel(mask, window, int(run_lengths[1::2].sum())):
            run_lengths = None  # the mask reaches past its box: the full-image path below
    if run_lengths is not None:
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
    """The outer contours of a crop placed at (x0, y0), as polygons in image coordinates."""
    # OpenCV is heavy (tens of MB of shared libraries): imported on first use, which
    # preload_encoders() makes happen while the model loads, never before the port is bound.
    import cv2

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
    import cv2  # noqa: F401  (heavy: see encode_polygons)
