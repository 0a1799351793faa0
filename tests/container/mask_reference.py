"""The reference mask encodings the server's crop encoder must equal: over the whole image."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util

from inference_server import mask_encoding


def full_image_rle(mask: np.ndarray) -> dict:
    """The reference: pycocotools over the whole mask, as detectron2's instances_to_coco_json does."""
    rle = mask_util.encode(np.array(mask[:, :, None], order="F", dtype="uint8"))[0]
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def full_image_polygons(mask: np.ndarray) -> list[list[float]]:
    return mask_encoding.encode_polygons(mask)  # without a box: contours of the whole image
