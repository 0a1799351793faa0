"""`batch`: upload a folder under a new batch id, write the submit marker, follow the transform job,
download the results (the convention shared with the batch pipeline: README, "Batch transform")."""

from __future__ import annotations

import argparse
import json
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from d2sm_contract import BATCH_SUMMARY_OBJECT

from . import outputs as names
from .async_invoke import object_body
from .aws import Aws, as_cli_error, aws_errors, split_s3_uri
from .errors import CliError
from .files import content_type, images_in, parse_result, save_result, write_bytes
from .progress import bar, emit, note, summarize

# The convention's characters; SageMaker job names must also end with a letter or digit.
BATCH_ID = re.compile(r"^[a-zA-Z0-9-]*[a-zA-Z0-9]$")
MAX_JOB_NAME = 63
SUMMARY_OBJECT = BATCH_SUMMARY_OBJECT
FINISHED = {"Completed", "Failed", "Stopped"}


def new_batch_id() -> str:
    """Sortable and unique enough for one user: UTC time plus 4 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def check_batch_id(batch_id: str, job_name_prefix: str) -> None:
    if not BATCH_ID.match(batch_id):
        raise CliError(
            f"batch id {batch_id!r} may only hold letters, digits and '-', and must end with a letter or "
            "digit"
        )
    if len(job_name_prefix) + len(batch_id) > MAX_JOB_NAME:
        raise CliError(
            f"batch id {batch_id!r} is too long: {job_name_prefix}{batch_id} must be at most {MAX_JOB_NAME} "
            f"characters (at most {MAX_JOB_NAME - len(job_name_prefix)} for the id)"
        )


def under(uri: str, *parts: str) -> tuple[str, str]:
    bucket, prefix = split_s3_uri(uri.rstrip("/"))
    return bucket, "/".join(p for p in (prefix, *parts) if p)


def describe_job(aws: Aws, job_name: str) -> dict | None:
    """The transform job, or None while the pipeline has not started it."""
    try:
        return aws.sagemaker.describe_transform_job(TransformJobName=job_name)
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if "Could not find" in message or "does not exist" in message:
            return None
        raise as_cli_error(f"describing transform job {job_name}", error) from None
    except BotoCoreError as error:
        raise as_cli_error(f"describing transform job {job_name}", error) from None


def count_outputs(aws: Aws, bucket: str, prefix: str) -> int:
    with aws_errors(f"listing s3://{bucket}/{prefix}/"):
        pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        return sum(1 for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".out"))


def not_started(aws: Aws, batch_id: str, summary_uri: str) -> None:
    """With no job yet, the pipeline's summary may already say why (status NotCreated: the create
    call was refused)."""
    body = object_body(aws, summary_uri)
    if body is None:
        return
    try:
        summary = json.loads(body)
    except json.JSONDecodeError:
        return
    if isinstance(summary, dict) and summary.get("status") not in (None, "Completed"):
        reason = summary.get("failureReason") or "no reason given"
        raise CliError(f"batch {batch_id}: the pipeline reports {summary['status']}: {reason}")


def run(
    aws: Aws,
    *,
    path: Path,
    batch_id: str | None,
    timeout_s: float,
    poll_s: float,
):
    images = images_in(path)
    found = aws.stack_outputs(names.BATCH)
    keys = (
        names.BATCH_JOB_NAME_PREFIX,
        names.BATCH_SUBMIT_URI,
        names.BATCH_INPUT_URI,
        names.BATCH_OUTPUT_URI,
    )
    missing = [k for k in keys if k not in found]
    if missing:
        raise CliError(
            f"stack {aws.stack_name(names.BATCH)} has no output {', '.join(missing)}: deploy the batch "
            "pipeline (batch.enabled) first"
        )
    prefix = found[names.BATCH_JOB_NAME_PREFIX]
    batch_id = batch_id or new_batch_id()
    check_batch_id(batch_id, prefix)
    job_name = prefix + batch_id

    input_bucket, input_prefix = under(found[names.BATCH_INPUT_URI], batch_id)
    for image in images:
        with aws_errors(f"uploading {image}"):
            aws.s3.upload_file(
                str(image),
                input_bucket,
                f"{input_prefix}/{image.name}",
                ExtraArgs={"ContentType": content_type(image)},
            )
    # The marker goes last: the pipeline starts the job on it, so every image must already be there.
    submit_bucket, submit_key = under(found[names.BATCH_SUBMIT_URI], batch_id)
    with aws_errors(f"writing the submit marker s3://{submit_bucket}/{submit_key}"):
        aws.s3.put_object(Bucket=submit_bucket, Key=submit_key, Body=b"")
    emit(
        {
            "batch_id": batch_id,
            "job": job_name,
            "input": f"s3://{input_bucket}/{input_prefix}/",
            "images": len(images),
        },
        f"batch {batch_id}: {len(images)} image(s) under s3://{input_bucket}/{input_prefix}/, job {job_name}",
    )

    output_bucket, output_prefix = under(found[names.BATCH_OUTPUT_URI], batch_id)
    summary_uri = f"s3://{output_bucket}/{output_prefix}/{SUMMARY_OBJECT}"
    # A hand-written loop rather than the TransformJobCompletedOrStopped waiter: the bar shows the
    # job's status and how many outputs exist while it runs, which a blocking waiter cannot.
    deadline = time.monotonic() + timeout_s
    with bar(len(images), job_name) as progress:
        while True:
            job = describe_job(aws, job_name)
            if job is None:
                not_started(aws, batch_id, summary_uri)
            status = job["TransformJobStatus"] if job else "waiting for the pipeline to start the job"
            progress.set_postfix_str(status)
            progress.n = count_outputs(aws, output_bucket, output_prefix) if job else 0
            progress.refresh()
            if status in FINISHED:
                break
            if time.monotonic() >= deadline:
                raise CliError(
                    f"transform job {job_name} is still {status!r} after {timeout_s:g} s; batch id {batch_id}"
                )
            time.sleep(poll_s)
    if status != "Completed":
        # A finished status comes from a described job: `job` is set here.
        reason = (job or {}).get("FailureReason", "no reason given")
        raise CliError(f"transform job {job_name} {status}: {reason}")

    failures: dict[Path, str] = {}
    for image in images:
        uri = f"s3://{output_bucket}/{output_prefix}/{image.name}.out"
        try:
            body = object_body(aws, uri)
            if body is None:
                raise CliError(f"no output at {uri}")
            document = parse_result(body, uri)
            saved = save_result(image, document)
            emit(
                {"image": str(image), "result": str(saved), "instances": len(document["instances"])},
                str(saved),
            )
        except CliError as error:
            failures[image] = str(error)
    summary = object_body(aws, summary_uri)
    if summary is not None:
        target = write_bytes(images[0].parent / f"batch-{batch_id}.summary.json", summary)
        emit({"summary": str(target)}, str(target))
    else:
        note(f"no {SUMMARY_OBJECT} yet (the pipeline writes it at {summary_uri})")
    summarize(
        failures,
        len(images),
        f"batch {batch_id}: {len(images) - len(failures)} result(s) saved beside the images",
        done={"batch_id": batch_id, "saved": len(images) - len(failures)},
    )


def add_parser(commands, common) -> None:
    bat = commands.add_parser(
        "batch", parents=[common], help="batch transform: submit a folder, follow the job, download results"
    )
    bat.add_argument("path", type=Path, help="a folder of images (or one image)")
    bat.add_argument("--batch-id", help="letters, digits and '-' (default: UTC time + random suffix)")
    bat.add_argument(
        "--timeout", type=positive_float, default=6 * 3600.0, help="seconds to wait (default 21600)"
    )
    bat.add_argument("--poll", type=positive_float, default=15.0, help="seconds between checks (default 15)")
    bat.set_defaults(
        handler=lambda args: run(
            Aws.from_args(args),
            path=args.path,
            batch_id=args.batch_id,
            timeout_s=args.timeout,
            poll_s=args.poll,
        )
    )


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
