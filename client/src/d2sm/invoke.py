"""`invoke`: real-time or serverless endpoint, one image or a folder, results saved beside the images."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from .aws import Aws, as_cli_error, require_in_service
from .errors import CliError
from .files import content_type, images_in, parse_result, save_result
from .progress import bar, say, summarize

STACK_FOR_MODE = {"realtime": "Realtime", "serverless": "Serverless"}


def endpoint_name(aws: Aws, mode: str, explicit: str | None) -> str:
    return explicit or aws.stack_output(STACK_FOR_MODE[mode], "EndpointName")


def invoke_one(aws: Aws, endpoint: str, image: Path, attributes: str | None) -> Path:
    request = {"EndpointName": endpoint, "ContentType": content_type(image), "Accept": "application/json"}
    if attributes:
        request["CustomAttributes"] = attributes
    try:
        response = aws.runtime.invoke_endpoint(Body=image.read_bytes(), **request)
    except (ClientError, BotoCoreError) as error:
        raise as_cli_error(f"invoking {endpoint}", error) from None
    document = parse_result(response["Body"].read(), f"endpoint {endpoint}")
    return save_result(image, document)


def run(aws: Aws, *, path: Path, mode: str, endpoint: str | None, concurrency: int, attributes: str | None):
    images = images_in(path)
    name = endpoint_name(aws, mode, endpoint)
    require_in_service(aws, name)
    failures: dict[Path, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool, bar(len(images), name) as progress:
        futures = {pool.submit(invoke_one, aws, name, image, attributes): image for image in images}
        for future in as_completed(futures):
            image = futures[future]
            try:
                saved = future.result()
                say(f"{saved}")
            except CliError as error:
                failures[image] = str(error)
            progress.update()
    summarize(failures, len(images), f"{len(images) - len(failures)} result(s) saved beside the images")
