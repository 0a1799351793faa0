"""Encoding the response: the crop encoder (response.detections_document, each mask's run lengths from
its box crop) against the full-image path it replaced, kept here only for this comparison."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pycocotools.mask as mask_util

from bench.common import Backend, Table, ms, percentile, timed
from inference_server import response
from inference_server.request_options import MaskFormat, RequestOptions

TITLE = "Response encoding (JSON + COCO RLE)"


def full_image_document(detections, class_names, options: RequestOptions) -> dict:
    """The encoder before the crop encoder: every selected mask copied, transposed into Fortran order
    over the full image and run through pycocotools in one call."""
    without_masks = dataclasses.replace(options, mask_format=MaskFormat.NONE)
    document = response.detections_document(detections, class_names, without_masks)
    keep = response.selected_instances(detections, options)
    masks = np.asarray(detections.masks[keep])
    if len(masks):
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8))
        for instance, rle in zip(document["instances"], rles, strict=True):
            instance["mask"] = {
                "size": [int(s) for s in rle["size"]],
                "counts": rle["counts"].decode("utf-8"),
            }
    return document


def run(backends: list[Backend], options: argparse.Namespace) -> Table:
    table = Table(
        TITLE,
        ["backend", "image", "full-image path p50", "crop encoder p50", "crop / full", "same bytes"],
    )
    request_options = RequestOptions()
    for backend in backends:
        detections, names = backend.detections, backend.predictor.class_names

        # Bound as defaults: each closure is the loop's current backend (B023).
        def before(detections=detections, names=names) -> bytes:
            return response.encode_json(full_image_document(detections, names, request_options))

        def after(detections=detections, names=names) -> bytes:
            return response.encode_json(response.detections_document(detections, names, request_options))

        same = before() == after()
        full, crop = [], []
        for _ in range(options.encode_repeats):  # interleaved, as the serving table
            full.append(timed(before))
            crop.append(timed(after))
        table.rows.append(
            [
                backend.name,
                backend.describe_image(),
                ms(percentile(full, 50)),
                ms(percentile(crop, 50)),
                f"{percentile(crop, 50) / percentile(full, 50):.1%}",
                "yes" if same else "**NO**",
            ]
        )
    table.notes.append(
        f"{options.encode_repeats} interleaved runs each, on the detections the backend predicts for the "
        "photo; both build the whole response body (instances, RLE masks, JSON)"
    )
    return table
