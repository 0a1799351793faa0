"""`invoke`: a real-time or serverless endpoint (or a server's --url), one image or a folder, each
result saved beside its image (or under --out-dir)."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from . import outputs
from .aws import Aws, require_in_service
from .errors import CliError
from .files import content_type, images_in, parse_result, read_bytes, result_path, save_result
from .progress import emit, note, summarize
from .runner import Interrupted, run_all
from .transport import EndpointTarget, UrlTarget, with_retries

MODES = ("realtime", "serverless")


def add_target_options(parser: argparse.ArgumentParser, *, modes: bool = True) -> None:
    """Where requests go: --url (a local server), else an endpoint from the mode's stack."""
    parser.add_argument(
        "--url",
        help="a server's base URL (e.g. http://127.0.0.1:8080 from `d2sm serve`) instead of an endpoint",
    )
    if modes:
        parser.add_argument("--mode", choices=MODES, default="realtime")
    parser.add_argument("--endpoint", help="endpoint name (default: the mode stack's EndpointName output)")
    parser.add_argument(
        "--inference-component",
        help="inference component to call (default: the stack's InferenceComponentName output, if any)",
    )
    parser.add_argument("--target-variant", help="production variant to send every request to (A/B tests)")


def target_for(args: argparse.Namespace, concurrency: int):
    """An UrlTarget for --url, else the endpoint (checked InService) with its component and variant."""
    if args.url:
        if args.endpoint or args.inference_component or args.target_variant:
            raise CliError(
                "--url talks to a server directly: drop --endpoint, --inference-component and "
                "--target-variant"
            )
        return UrlTarget(args.url, concurrency=concurrency)
    aws = Aws.from_args(args)
    mode = getattr(args, "mode", "realtime")
    name, component = args.endpoint, args.inference_component
    if not name:
        stack = outputs.STACK_FOR_MODE[mode]
        found = aws.stack_outputs(stack)
        name = found.get(outputs.ENDPOINT_NAME) or aws.stack_output(stack, outputs.ENDPOINT_NAME)
        # The stack's component belongs to the stack's endpoint, not to one named with --endpoint.
        component = component or found.get(outputs.INFERENCE_COMPONENT_NAME)
    require_in_service(aws, name)
    return EndpointTarget(aws, name, component=component, variant=args.target_variant)


def pending_images(images: list[Path], root: Path, out_dir: Path | None, overwrite: bool) -> list[Path]:
    """The images to send: those without a result yet, unless --overwrite."""
    if overwrite:
        return images
    todo = [i for i in images if not result_path(i, root, out_dir).is_file()]
    if len(todo) < len(images):
        note(
            f"skipping {len(images) - len(todo)} image(s) that already have a result "
            "(--overwrite to redo them)"
        )
    return todo


def add_folder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recursive", "-r", action="store_true", help="include images in subfolders")
    parser.add_argument(
        "--out-dir", type=Path, help="write results here (mirroring subfolders) instead of beside the images"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo images that already have a result")


def add_parser(commands, common) -> None:
    inv = commands.add_parser(
        "invoke",
        parents=[common],
        help="real-time or serverless endpoint (or --url): one image or a folder, results beside them",
    )
    inv.add_argument("path", type=Path, help="an image or a folder of images")
    add_target_options(inv)
    inv.add_argument("--concurrency", type=positive_int, default=4, help="requests in flight (default 4)")
    inv.add_argument(
        "--retries",
        type=non_negative_int,
        default=5,
        help="retries of a request the server refused with 503/429 (default 5)",
    )
    inv.add_argument("--attributes", help="custom attributes, e.g. score_threshold=0.5,max_detections=20")
    add_folder_options(inv)
    inv.set_defaults(handler=handle)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def handle(args: argparse.Namespace) -> None:
    images = images_in(args.path, args.recursive)
    todo = pending_images(images, args.path, args.out_dir, args.overwrite)
    if not todo:
        emit({"done": True, "saved": 0, "skipped": len(images)}, "nothing to do: every image has a result")
        return
    target = target_for(args, args.concurrency)

    def work(image: Path, cancel: threading.Event) -> Path:
        body = read_bytes(image, "image ")
        answer = with_retries(
            lambda: target.invoke(body, content_type(image), args.attributes), args.retries, cancel
        )
        document = parse_result(answer, target.name if args.url else f"endpoint {target.name}")
        saved = save_result(image, document, result_path(image, args.path, args.out_dir))
        emit({"image": str(image), "result": str(saved), "instances": len(document["instances"])}, str(saved))
        return saved

    outcome = run_all(todo, work, concurrency=args.concurrency, label=target.name)
    if outcome.interrupted:
        raise Interrupted(
            f"interrupted: {len(outcome.done)} result(s) saved, {len(outcome.failures)} failed, "
            f"{len(outcome.not_sent)} not sent (run again to send only those)"
        )
    summarize(
        outcome.failures,
        len(todo),
        f"{len(outcome.done)} result(s) saved"
        + (f" under {args.out_dir}" if args.out_dir else " beside the images"),
        done={"saved": len(outcome.done), "skipped": len(images) - len(todo)},
    )
