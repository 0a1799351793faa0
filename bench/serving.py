"""Served vs direct: POST /invocations against the same artifact's predictor called in a process of
its own (bench/direct.py) on the same decoded photo, interleaved one call at a time (the idle side
never competes for the CPU, and a busy machine slows both alike)."""

from __future__ import annotations

import argparse
import functools

import requests

from bench.common import Backend, Table, ms, percentile, timed
from bench.direct import DirectPredictor
from inference_server import decoding, response
from inference_server.request_options import RequestOptions

TITLE = "Served vs direct predictor"


def own_work_once(backend: Backend) -> bytes:
    """Decode the JPEG and encode the response for it, as the server's codec threads do."""
    decoding.decode_image(
        backend.jpeg, "image/jpeg", input_format=backend.predictor.input_format, max_pixels=10**9
    )
    names = backend.predictor.class_names
    document = response.detections_document(backend.detections, names, RequestOptions())
    return response.encode_json(document)


def run(backends: list[Backend], options: argparse.Namespace) -> Table:
    table = Table(
        TITLE,
        [
            "backend",
            "image",
            "served p50 / p95",
            "direct p50 / p95",
            "overhead p50",
            "overhead p50 / direct p50",
            "median of pair differences",
            "decode + encode p50 (share of direct p50)",
        ],
    )
    for backend in backends:
        _ = backend.detections  # loads the in-process predictor, for the own-work timing below
        direct_predictor = DirectPredictor(
            backend.model_dir, backend.photo, backend.out_dir / f"{backend.name}-direct.log"
        )
        server = backend.start_server("serving")
        try:
            session = requests.Session()

            def invoke(server=server, session=session, backend=backend) -> None:
                server.invoke(backend.jpeg, session).raise_for_status()

            invoke()  # the connection, and the first request's one-off costs
            served, direct = [], []
            for _ in range(options.pairs):
                served.append(timed(invoke))
                direct.append(timed(direct_predictor))
        finally:
            server.stop()
            direct_predictor.stop()
        # The server's own work per request, timed alone in this process: what serving adds to the
        # model besides one local HTTP round trip.
        own_work = [timed(functools.partial(own_work_once, backend)) for _ in range(options.encode_repeats)]
        overhead = percentile(served, 50) - percentile(direct, 50)
        # Each pair ran back to back, so its difference cancels most of a drifting machine load.
        paired = percentile([s - d for s, d in zip(served, direct, strict=True)], 50)
        table.rows.append(
            [
                backend.name,
                backend.describe_image(),
                f"{ms(percentile(served, 50))} / {ms(percentile(served, 95))}",
                f"{ms(percentile(direct, 50))} / {ms(percentile(direct, 95))}",
                f"{overhead * 1000:+.0f} ms",
                f"{overhead / percentile(direct, 50):+.1%}",
                f"{paired * 1000:+.0f} ms ({paired / percentile(direct, 50):+.1%})",
                f"{ms(percentile(own_work, 50))} ({percentile(own_work, 50) / percentile(direct, 50):.2%})",
            ]
        )
    table.notes.append(
        f"{options.pairs} interleaved pairs; served = HTTP + decode JPEG + predict + encode JSON/RLE "
        "in the server process, direct = the predictor alone on the already decoded image, in a fresh "
        "process of its own under the same heap policy (bench/direct.py)"
    )
    return table
