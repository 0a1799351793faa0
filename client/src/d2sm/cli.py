"""d2sm: register, invoke, async, batch, show and verify for the Detectron2 SageMaker stacks.

Every failure is one `error:` line on stderr and exit status 1 (2 for a bad command line).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import async_invoke, batch, invoke, register, show, verify
from .aws import DEFAULT_APP_NAME, Aws
from .errors import CliError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad call prints one line instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="d2sm", description=__doc__.splitlines()[0])
    root.add_argument(
        "--app-name",
        default=os.environ.get("D2SM_APP_NAME", DEFAULT_APP_NAME),
        help="the CDK app's `name`: stacks are <name>-Shared|Realtime|Async|Serverless|Batch (default "
        "$D2SM_APP_NAME or Detectron2)",
    )
    root.add_argument("--region", help="AWS region (default: the profile's or $AWS_REGION)")
    root.add_argument("--profile", help="AWS profile")
    root.add_argument(
        "--max-attempts",
        type=positive(int),
        default=5,
        help="attempts per AWS call, first included; throttling and transient errors are retried (default 5)",
    )
    commands = root.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    reg = commands.add_parser(
        "register",
        help="package (optional), upload and register a model.tar.gz as a new model package version",
        description="d2sm register model.tar.gz | d2sm register [options] -- <python -m inference_server.package flags>",
    )
    reg.add_argument("model", nargs="?", help="model.tar.gz to upload, or an s3:// URI used in place")
    reg.add_argument(
        "--approve", action="store_true", help="register as Approved (default PendingManualApproval)"
    )
    reg.add_argument("--description", help="version description (default: the latest version's)")
    reg.add_argument("--bucket", help="bucket to upload to (default: the Shared stack's ArtifactsBucketName)")
    reg.add_argument(
        "--group", help="model package group (default: the Shared stack's ModelPackageGroupName)"
    )
    reg.add_argument(
        "--container-dir", type=Path, help="folder holding inference_server (default ./container)"
    )
    reg.add_argument(
        "--packager-python", help="python with torch (+detectron2) to package with (default: this one)"
    )
    reg.add_argument("--wait-delay", type=positive(float), default=5.0, help=argparse.SUPPRESS)
    reg.epilog = "Everything after -- goes to the packaging command; it gets --output itself."

    inv = commands.add_parser(
        "invoke", help="real-time or serverless: one image or a folder, results beside them"
    )
    inv.add_argument("path", type=Path, help="an image or a folder of images")
    inv.add_argument("--mode", choices=sorted(invoke.STACK_FOR_MODE), default="realtime")
    inv.add_argument("--endpoint", help="endpoint name (default: the mode stack's EndpointName output)")
    inv.add_argument("--concurrency", type=positive(int), default=4, help="requests in flight (default 4)")
    inv.add_argument("--attributes", help="custom attributes, e.g. score_threshold=0.5,max_detections=20")

    asy = commands.add_parser(
        "async", help="asynchronous endpoint: upload, invoke, wait for each result, download"
    )
    asy.add_argument("path", type=Path, help="an image or a folder of images")
    asy.add_argument("--endpoint", help="endpoint name (default: the Async stack's EndpointName output)")
    asy.add_argument(
        "--input-uri", help="s3:// prefix for requests (default: the Async stack's InputUri output)"
    )
    asy.add_argument("--attributes", help="custom attributes, as for invoke")
    asy.add_argument("--timeout", type=positive(float), default=3600.0, help="seconds to wait (default 3600)")
    asy.add_argument("--poll", type=positive(float), default=5.0, help="seconds between checks (default 5)")

    bat = commands.add_parser(
        "batch", help="batch transform: submit a folder, follow the job, download results"
    )
    bat.add_argument("path", type=Path, help="a folder of images (or one image)")
    bat.add_argument("--batch-id", help="letters, digits and '-' (default: UTC time + random suffix)")
    bat.add_argument(
        "--timeout", type=positive(float), default=6 * 3600.0, help="seconds to wait (default 21600)"
    )
    bat.add_argument("--poll", type=positive(float), default=15.0, help="seconds between checks (default 15)")

    sho = commands.add_parser("show", help="draw masks, boxes, classes and scores over the image into a PNG")
    sho.add_argument("path", type=Path, help="a result (photo.jpg.json) or a folder of images with results")
    sho.add_argument("--image", type=Path, help="the image (default: the result's name without .json)")
    sho.add_argument("--output", type=Path, help="PNG to write (default: photo.jpg.overlay.png)")
    sho.add_argument("--min-score", type=float, default=0.0, help="hide instances scoring below this")
    verify.add_command(commands)
    return root


def dispatch(args: argparse.Namespace, packager_args: list[str]) -> None:
    if args.command == "show":
        show.run(path=args.path, image=args.image, output=args.output, min_score=args.min_score)
        return
    aws = Aws(
        region=args.region, profile=args.profile, app_name=args.app_name, max_attempts=args.max_attempts
    )
    if args.command == "register":
        register.run(
            aws,
            model=args.model,
            packager_args=packager_args,
            container_dir=args.container_dir,
            packager_python=args.packager_python,
            bucket=args.bucket,
            group=args.group,
            approve=args.approve,
            description=args.description,
            wait_delay_s=args.wait_delay,
        )
    elif args.command == "invoke":
        invoke.run(
            aws,
            path=args.path,
            mode=args.mode,
            endpoint=args.endpoint,
            concurrency=args.concurrency,
            attributes=args.attributes,
        )
    elif args.command == "async":
        async_invoke.run(
            aws,
            path=args.path,
            endpoint=args.endpoint,
            input_uri=args.input_uri,
            attributes=args.attributes,
            timeout_s=args.timeout,
            poll_s=args.poll,
        )
    elif args.command == "batch":
        batch.run(aws, path=args.path, batch_id=args.batch_id, timeout_s=args.timeout, poll_s=args.poll)
    elif args.command == "verify":
        verify.run_command(aws, args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `register ... -- <packaging flags>`: split by hand, argparse would take them for its own.
    packager_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, packager_args = argv[:split], argv[split + 1 :]
    args = parser().parse_args(argv)
    if packager_args and args.command != "register":
        parser().error(f"only register takes arguments after --, {args.command} does not")
    try:
        dispatch(args, packager_args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
