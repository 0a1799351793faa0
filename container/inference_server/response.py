"""The response body: detections as the JSON document of the response schema (see README), with the
request's options applied and each mask encoded as the request asks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from inference_server.backends.base import Detections
from inference_server.mask_encoding import (
    encode_crop_polygons,
    encode_crop_rle,
    encode_mask_rle,
    encode_polygons,
)
from inference_server.masks import PastedMasks
from inference_server.request_options import MaskFormat, RequestOptions


def selected_instances(detections: Detections, options: RequestOptions) -> np.ndarray:
    """Indices of the instances to return: above the threshold, best first, at most max_detections."""
    order = np.argsort(-detections.scores, kind="stable")
    order = order[detections.scores[order] >= options.score_threshold]
    return order[: options.max_detections]


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
