"""The response body: detections as the JSON document of the response schema (see README), with the
request's options applied and each mask encoded as the request asks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from inference_server.backends.base import Detections
from inference_server.mask_encoding import encode_mask_rle, encode_polygons
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
    if detections.masks is not None and options.mask_format is not MaskFormat.NONE:
        # One mask at a time: detections.masks[keep] would copy every full-size mask first.
        encode = encode_mask_rle if options.mask_format is MaskFormat.RLE else encode_polygons
        key = "mask" if options.mask_format is MaskFormat.RLE else "polygons"
        for instance, index in zip(instances, keep, strict=True):
            instance[key] = encode(detections.masks[index], detections.boxes[index])
    return {
        "image": {"height": detections.image_height, "width": detections.image_width},
        "instances": instances,
    }


def encode_json(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
