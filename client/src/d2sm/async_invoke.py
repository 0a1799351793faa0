"""`async`: upload to the async input prefix, InvokeEndpointAsync, wait for each output or failure object."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from .aws import Aws, as_cli_error, aws_errors, error_code, require_in_service, split_s3_uri
from .errors import CliError
from .files import content_type, images_in, parse_result, save_result
from .progress import bar, say, summarize


@dataclass
class Pending:
    image: Path
    output: str
    failure: str | None


def object_body(aws: Aws, uri: str) -> bytes | None:
    """The object's bytes, or None while it does not exist yet."""
    bucket, key = split_s3_uri(uri)
    try:
        return aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error_code(error) in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise as_cli_error(f"reading {uri}", error) from None
    except BotoCoreError as error:
        raise as_cli_error(f"reading {uri}", error) from None


def submit(aws: Aws, endpoint: str, input_uri: str, image: Path, attributes: str | None) -> Pending:
    bucket, prefix = split_s3_uri(input_uri.rstrip("/"))
    # A fresh prefix per request: two runs with the same file names never overwrite each other's input.
    key = f"{prefix}/{uuid.uuid4().hex}/{image.name}"
    with aws_errors(f"uploading {image} to s3://{bucket}/{key}"):
        aws.s3.upload_file(str(image), bucket, key, ExtraArgs={"ContentType": content_type(image)})
    request = {
        "EndpointName": endpoint,
        "InputLocation": f"s3://{bucket}/{key}",
        "ContentType": content_type(image),
        "Accept": "application/json",
    }
    if attributes:
        request["CustomAttributes"] = attributes
    with aws_errors(f"invoking {endpoint} asynchronously"):
        response = aws.runtime.invoke_endpoint_async(**request)
    return Pending(image, response["OutputLocation"], response.get("FailureLocation"))


def run(
    aws: Aws,
    *,
    path: Path,
    endpoint: str | None,
    input_uri: str | None,
    attributes: str | None,
    timeout_s: float,
    poll_s: float,
):
    images = images_in(path)
    name = endpoint or aws.stack_output("Async", "EndpointName")
    require_in_service(aws, name)
    input_uri = input_uri or aws.stack_output("Async", "InputUri")
    failures: dict[Path, str] = {}
    pending: list[Pending] = []
    for image in images:
        try:
            pending.append(submit(aws, name, input_uri, image, attributes))
        except CliError as error:
            failures[image] = str(error)
    # S3 has no "either of two objects" waiter, so one loop polls every request's output and failure.
    deadline = time.monotonic() + timeout_s
    with bar(len(pending), f"{name} (async)") as progress:
        while pending:
            for request in list(pending):
                try:
                    body = object_body(aws, request.output)
                    if body is not None:
                        say(str(save_result(request.image, parse_result(body, request.output))))
                    elif request.failure and (failure := object_body(aws, request.failure)) is not None:
                        message = failure.decode("utf-8", "replace").strip().replace("\n", " ")
                        raise CliError(f"the endpoint wrote a failure to {request.failure}: {message[:500]}")
                    else:
                        continue
                except CliError as error:
                    failures[request.image] = str(error)
                pending.remove(request)
                progress.update()
            if pending:
                if time.monotonic() >= deadline:
                    for request in pending:
                        failures[request.image] = (
                            f"no output after {timeout_s:g} s (still expected at {request.output})"
                        )
                    break
                time.sleep(poll_s)
    summarize(failures, len(images), f"{len(images) - len(failures)} result(s) saved beside the images")
