"""Counts a finished batch's result objects and those the container wrote as an error object.

Runs in AWS Lambda (Python runtime; boto3 is provided there) as one step of the batch pipeline's
state machine, after its transform job ends. Step Functions cannot read thousands of objects in one
execution (payload and history limits), so this function does the reading and returns two numbers.

In batch mode the container answers a record it cannot decode with HTTP 200 and a JSON body
`{"error": {...}}` (BATCH_RECORD_ERRORS=object), so SageMaker writes that body as the image's
`.out` object instead of failing the job; reading the first bytes of each object is enough.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

RESULT_SUFFIX = ".out"
# `{"error":` with any JSON whitespace: the first key of the container's error object.
ERROR_OBJECT_START = re.compile(rb'^\s*\{\s*"error"\s*:')
HEAD_BYTES = 64
READERS = 16


def count(event: dict[str, Any], context: object = None, *, s3: Any = None) -> dict[str, Any]:
    """`{"bucket", "prefix"}` -> `{"outputs": n, "errorObjects": k, "errorObjectKeys": [first 20]}`."""
    s3 = s3 or boto3.client("s3")
    bucket, prefix = event["bucket"], event["prefix"]
    results = [
        item
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if item["Key"].endswith(RESULT_SUFFIX)
    ]
    keys = [item["Key"] for item in results]

    def is_error_object(item: dict[str, Any]) -> bool:
        if item["Size"] == 0:  # S3 refuses a byte range of an empty object
            return False
        head = s3.get_object(Bucket=bucket, Key=item["Key"], Range=f"bytes=0-{HEAD_BYTES - 1}")["Body"].read()
        return ERROR_OBJECT_START.match(head) is not None

    with ThreadPoolExecutor(READERS) as pool:
        errored = [key for key, bad in zip(keys, pool.map(is_error_object, results)) if bad]
    return {"outputs": len(keys), "errorObjects": len(errored), "errorObjectKeys": errored[:20]}
