"""`async`: upload to the async input prefix, InvokeEndpointAsync, wait for each output or failure
object. Whatever is still pending when the wait ends (Ctrl-C, --timeout) is saved to a pending file
that `d2sm results` collects later."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from . import outputs
from .aws import Aws, as_cli_error, aws_errors, error_code, require_in_service, split_s3_uri
from .errors import CliError
from .files import content_type, images_in, parse_result, read_json, result_path, save_result, write_bytes
from .invoke import add_folder_options, pending_images
from .progress import bar, emit, note, summarize
from .runner import Interrupted

PENDING_KIND = "d2sm-async-pending"
PENDING_SUFFIX = ".pending.json"


@dataclass
class Pending:
    image: str
    output: str
    failure: str | None
    result: str  # where the result goes on this machine


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


def submit(
    aws: Aws, endpoint: str, input_uri: str, image: Path, attributes: str | None, result: Path
) -> Pending:
    bucket, prefix = split_s3_uri(input_uri.rstrip("/"))
    # A fresh prefix per request: two runs with the same file names never overwrite each other's input.
    key = f"{prefix}/{uuid.uuid4().hex}/{image.name}"
    if not image.is_file():
        raise CliError(f"cannot read image {image}: it is not a file")
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
    return Pending(str(image), response["OutputLocation"], response.get("FailureLocation"), str(result))


def save_pending(path: Path, endpoint: str, pending: list[Pending]) -> Path:
    document = {"kind": PENDING_KIND, "endpoint": endpoint, "requests": [asdict(p) for p in pending]}
    return write_bytes(path, (json.dumps(document, indent=1) + "\n").encode())


def load_pending(path: Path) -> tuple[str, list[Pending]]:
    document = read_json(path)
    try:
        if not isinstance(document, dict) or document["kind"] != PENDING_KIND:
            raise KeyError("kind")
        return document["endpoint"], [Pending(**r) for r in document["requests"]]
    except (KeyError, TypeError):
        raise CliError(f"{path} is not a pending file written by `d2sm async`") from None


def collect(
    aws: Aws, pending: list[Pending], *, label: str, timeout_s: float, poll_s: float, pending_file: Path
):
    """Poll every request's output and failure object until all arrived or the wait ends; what is
    still pending then goes to `pending_file` (removed when nothing is left)."""
    failures: dict[Path, str] = {}
    saved = 0
    total = len(pending)
    deadline = time.monotonic() + timeout_s
    stopped = None
    # S3 has no "either of two objects" waiter, so one loop polls every request's output and failure.
    with bar(total, label) as progress:
        try:
            while pending:
                for request in list(pending):
                    try:
                        body = object_body(aws, request.output)
                        if body is not None:
                            document = parse_result(body, request.output)
                            target = save_result(Path(request.image), document, Path(request.result))
                            saved += 1
                            emit(
                                {
                                    "image": request.image,
                                    "result": str(target),
                                    "instances": len(document["instances"]),
                                },
                                str(target),
                            )
                        elif request.failure and (failure := object_body(aws, request.failure)) is not None:
                            message = failure.decode("utf-8", "replace").strip().replace("\n", " ")
                            raise CliError(
                                f"the endpoint wrote a failure to {request.failure}: {message[:500]}"
                            )
                        else:
                            continue
                    except CliError as error:
                        failures[Path(request.image)] = str(error)
                    pending.remove(request)
                    progress.update()
                if pending:
                    if time.monotonic() >= deadline:
                        stopped = f"no output after {timeout_s:g} s"
                        break
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            stopped = "interrupted"
    if pending:
        save_pending(pending_file, label, pending)
        emit({"pending": len(pending), "pending_file": str(pending_file)})
        message = (
            f"{stopped}: {saved} result(s) saved, {len(pending)} still running; collect them later with "
            f"`d2sm results {pending_file}`"
        )
        if stopped == "interrupted":
            raise Interrupted(message)
        for image, problem in sorted(failures.items()):
            note(f"error: {image}: {problem}")
        raise CliError(message)
    if pending_file.exists():
        pending_file.unlink(missing_ok=True)
    summarize(failures, total, f"{saved} result(s) saved", done={"saved": saved})


def default_pending_file(path: Path, out_dir: Path | None) -> Path:
    folder = out_dir or (path if path.is_dir() else path.parent)
    return folder / f"d2sm-async-{datetime.now(UTC):%Y%m%d-%H%M%S}{PENDING_SUFFIX}"


def run(args: argparse.Namespace) -> None:
    invoke_async(
        Aws.from_args(args),
        args.path,
        endpoint=args.endpoint,
        input_uri=args.input_uri,
        attributes=args.attributes,
        timeout_s=args.timeout,
        poll_s=args.poll,
        pending_file=args.pending_file,
        out_dir=args.out_dir,
        recursive=args.recursive,
        overwrite=args.overwrite,
    )


def invoke_async(
    aws: Aws,
    path: Path,
    *,
    endpoint: str | None = None,
    input_uri: str | None = None,
    attributes: str | None = None,
    timeout_s: float,
    poll_s: float,
    pending_file: Path | None = None,
    out_dir: Path | None = None,
    recursive: bool = False,
    overwrite: bool = False,
) -> None:
    """Send an image or a folder through the async endpoint and save each result (`d2sm async`,
    and `d2sm verify`'s async check)."""
    images = images_in(path, recursive)
    todo = pending_images(images, path, out_dir, overwrite)
    if not todo:
        emit({"done": True, "saved": 0, "skipped": len(images)}, "nothing to do: every image has a result")
        return
    name = endpoint or aws.stack_output(outputs.ASYNC, outputs.ENDPOINT_NAME)
    require_in_service(aws, name)
    input_uri = input_uri or aws.stack_output(outputs.ASYNC, outputs.ASYNC_INPUT_URI)
    pending_file = pending_file or default_pending_file(path, out_dir)
    failures: dict[Path, str] = {}
    pending: list[Pending] = []
    try:
        for image in todo:
            try:
                pending.append(
                    submit(
                        aws,
                        name,
                        input_uri,
                        image,
                        attributes,
                        result_path(image, path, out_dir),
                    )
                )
            except CliError as error:
                failures[image] = str(error)
    except KeyboardInterrupt:
        # Nothing more is submitted; what was is saved so its results can still be collected.
        not_sent = len(todo) - len(pending) - len(failures)
        if pending:
            save_pending(pending_file, name, pending)
        raise Interrupted(
            f"interrupted: {not_sent} not sent, {len(pending)} running"
            + (f"; collect them later with `d2sm results {pending_file}`" if pending else "")
        ) from None
    for image, problem in failures.items():
        note(f"error: {image}: {problem}")
    collect(
        aws,
        pending,
        label=f"{name} (async)",
        timeout_s=timeout_s,
        poll_s=poll_s,
        pending_file=pending_file,
    )
    if failures:
        raise CliError(f"{len(failures)} of {len(todo)} images failed")


def add_parser(commands, common) -> None:
    asy = commands.add_parser(
        "async",
        parents=[common],
        help="asynchronous endpoint: upload, invoke, wait for each result, download",
    )
    asy.add_argument("path", type=Path, help="an image or a folder of images")
    asy.add_argument("--endpoint", help="endpoint name (default: the Async stack's EndpointName output)")
    asy.add_argument(
        "--input-uri", help="s3:// prefix for requests (default: the Async stack's InputUri output)"
    )
    asy.add_argument("--attributes", help="custom attributes, as for invoke")
    asy.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds to wait (default 3600)")
    asy.add_argument("--poll", type=positive_float, default=5.0, help="seconds between checks (default 5)")
    asy.add_argument(
        "--pending-file",
        type=Path,
        help="where requests still running after Ctrl-C or --timeout are saved "
        f"(default d2sm-async-<time>{PENDING_SUFFIX} in the folder)",
    )
    add_folder_options(asy)
    asy.set_defaults(handler=run)


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
