"""`verify`: prove that every mode deployed under the app's name answers correctly.

For each mode stack (`<app>-Realtime|Serverless|Async|Batch`) it reads the stack's outputs, sends the
bundled photo (each A/B variant with TargetVariant, the inference component by name, async through
S3, batch as a one-image batch through the pipeline's convention), checks each answer against the
response schema, and checks that each endpoint runs the EndpointConfig its stack deployed: after a
blue/green update SageMaker rolled back, the endpoint runs the previous config while the stack says
otherwise. One table row per check; one `error:` line per failure; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

import d2sm_contract as contract

from . import async_invoke, batch
from .aws import Aws, as_cli_error, describe_client_error
from .errors import CliError
from .files import parse_result

PHOTO = Path(__file__).resolve().parent / "data" / "verify.jpg"
PHOTO_SIZE = {"height": 480, "width": 640}
# Mode -> the stack suffix the CDK app gives it (as `invoke`, `async` and `batch` read them).
STACKS = contract.STACK_FOR_MODE
MODES = contract.MODES
HEALTHY_STACK = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
# An inference component scaled to zero answers this until its first copy is up.
NO_CAPACITY = "no capacity"


@dataclass
class Check:
    mode: str
    endpoint: str = "-"
    status: str = "-"
    latency_ms: float | None = None
    instances: str = "-"
    problems: list[str] = field(default_factory=list)
    skipped: bool = False

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "skipped"
        return "FAIL" if self.problems else "ok"


def schema_problems(document: dict) -> list[str]:
    """What in a detections document breaks the response schema (README, "Response"), for the
    bundled photo: its image size, and per instance class, score, box inside the image, mask size."""
    problems = []
    image = document.get("image")
    if image != PHOTO_SIZE:
        problems.append(f"image is {image!r}, expected {PHOTO_SIZE}")
    height, width = PHOTO_SIZE["height"], PHOTO_SIZE["width"]
    for index, instance in enumerate(document["instances"]):
        where = f"instances[{index}]"
        if not isinstance(instance, dict):
            problems.append(f"{where} is not an object")
            continue
        if not isinstance(instance.get("class_id"), int) or isinstance(instance.get("class_id"), bool):
            problems.append(f"{where}.class_id is not an integer")
        if not isinstance(instance.get("class_name"), (str, type(None))):
            problems.append(f"{where}.class_name is not a string")
        score = instance.get("score")
        if not isinstance(score, (int, float)) or not 0 <= score <= 1:
            problems.append(f"{where}.score {score!r} is not in [0, 1]")
        box = instance.get("box")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
        ):
            problems.append(f"{where}.box is not 4 numbers")
        elif not (-1 <= box[0] <= box[2] <= width + 1 and -1 <= box[1] <= box[3] <= height + 1):
            problems.append(f"{where}.box {box} is not inside the {width}x{height} image")
        mask = instance.get("mask")
        if mask is not None and (
            not isinstance(mask, dict)
            or mask.get("size") != [height, width]
            or not isinstance(mask.get("counts"), str)
        ):
            problems.append(f"{where}.mask is not a COCO RLE of the image's size")
    return problems


def check_answer(check: Check, body: bytes, source: str) -> None:
    try:
        document = parse_result(body, source)
    except CliError as error:
        check.problems.append(str(error))
        return
    problems = schema_problems(document)
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        check.problems.append(
            f"{source}: the answer breaks the response schema: {'; '.join(problems[:3])}{more}"
        )


class Verifier:
    def __init__(self, aws: Aws, *, timeout_s: float, poll_s: float) -> None:
        self.aws, self.timeout_s, self.poll_s = aws, timeout_s, poll_s
        self.cloudformation = aws.client("cloudformation")

    def stack(self, mode: str) -> dict | None:
        """The mode's stack, or None when it is not deployed."""
        name = self.aws.stack_name(STACKS[mode])
        try:
            return self.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        except ClientError as error:
            if "does not exist" in error.response.get("Error", {}).get("Message", ""):
                return None
            raise as_cli_error(f"describing stack {name}", error) from None
        except BotoCoreError as error:
            raise as_cli_error(f"describing stack {name}", error) from None

    def verify(self, mode: str, stack: dict) -> list[Check]:
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        check = Check(mode)
        if stack["StackStatus"] not in HEALTHY_STACK:
            check.problems.append(f"stack {stack['StackName']} is {stack['StackStatus']}")
            return [check]
        if mode == "batch":
            return [self.batch(check, outputs)]
        if contract.ENDPOINT_NAME not in outputs:
            check.problems.append(f"stack {stack['StackName']} has no EndpointName output")
            return [check]
        check.endpoint = outputs[contract.ENDPOINT_NAME]
        endpoint = self.endpoint(check, stack["StackName"], outputs)
        if endpoint is None:
            return [check]
        if mode == "async":
            return [self.asynchronous(check, outputs)]
        variants = [v for v in outputs.get(contract.VARIANT_NAMES, "").split(",") if v]
        if len(variants) > 1:
            checks = []
            for index, variant in enumerate(variants):
                # The endpoint's own problems (its config) on the first variant's row only.
                row = Check(
                    f"{mode} {variant}",
                    check.endpoint,
                    check.status,
                    problems=[] if index else check.problems,
                )
                row.instances = instances_of(endpoint, variant)
                self.invoke(row, TargetVariant=variant)
                checks.append(row)
            return checks
        if contract.INFERENCE_COMPONENT_NAME in outputs:
            check.mode = f"{mode} component"
            self.component(check, outputs[contract.INFERENCE_COMPONENT_NAME])
            self.invoke(check, InferenceComponentName=outputs[contract.INFERENCE_COMPONENT_NAME])
            return [check]
        check.instances = instances_of(endpoint, None)
        self.invoke(check)
        return [check]

    def endpoint(self, check: Check, stack_name: str, outputs: dict[str, str]) -> dict | None:
        """DescribeEndpoint; its status must be InService and its config the one the stack deployed."""
        try:
            endpoint = self.aws.sagemaker.describe_endpoint(EndpointName=check.endpoint)
        except (ClientError, BotoCoreError) as error:
            check.problems.append(str(as_cli_error(f"describing endpoint {check.endpoint}", error)))
            return None
        check.status = endpoint["EndpointStatus"]
        if check.status != "InService":
            reason = endpoint.get("FailureReason")
            check.problems.append(
                f"endpoint {check.endpoint} is {check.status}, not InService"
                + (f": {reason}" if reason else "")
            )
            return None
        deployed = outputs.get(contract.ENDPOINT_CONFIG_NAME)
        live = endpoint["EndpointConfigName"]
        if deployed is None:
            check.problems.append(
                f"stack {stack_name} has no EndpointConfigName output to compare with; redeploy it"
            )
        elif live != deployed:
            check.problems.append(
                f"endpoint {check.endpoint} runs endpoint config {live}, but stack {stack_name} deployed "
                f'{deployed}: SageMaker rolled the update back (docs/first-deploy.md, "After a rollback")'
            )
        return endpoint

    def component(self, check: Check, name: str) -> None:
        try:
            component = self.aws.sagemaker.describe_inference_component(InferenceComponentName=name)
        except (ClientError, BotoCoreError) as error:
            check.problems.append(str(as_cli_error(f"describing inference component {name}", error)))
            return
        if component.get("InferenceComponentStatus") != "InService":
            check.problems.append(
                f"inference component {name} is {component.get('InferenceComponentStatus')}, not InService"
            )
        copies = component.get("RuntimeConfig", {}).get("CurrentCopyCount")
        check.instances = f"{copies} copies" if copies is not None else "-"

    def invoke(self, check: Check, **target: str) -> None:
        request = {
            "EndpointName": check.endpoint,
            "Body": PHOTO.read_bytes(),
            "ContentType": "image/jpeg",
            "Accept": "application/json",
            **target,
        }
        deadline = time.monotonic() + self.timeout_s
        while True:
            started = time.perf_counter()
            try:
                response = self.aws.runtime.invoke_endpoint(**request)
                body = response["Body"].read()
            except ClientError as error:
                # A component at zero copies: this call starts one (the alarm), later calls find it.
                waiting = "InferenceComponentName" in target and NO_CAPACITY in describe_client_error(error)
                if waiting and time.monotonic() < deadline:
                    time.sleep(self.poll_s)
                    continue
                check.problems.append(str(as_cli_error(f"invoking {check.endpoint}", error)))
                return
            except BotoCoreError as error:
                check.problems.append(str(as_cli_error(f"invoking {check.endpoint}", error)))
                return
            check.latency_ms = (time.perf_counter() - started) * 1000
            break
        check_answer(check, body, f"endpoint {check.endpoint}")

    def asynchronous(self, check: Check, outputs: dict[str, str]) -> Check:
        if contract.ASYNC_INPUT_URI not in outputs:
            check.problems.append("the Async stack has no InputUri output")
            return check
        with self.one_photo() as image, contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            try:
                async_invoke.invoke_async(
                    self.aws,
                    image,
                    endpoint=check.endpoint,
                    input_uri=outputs[contract.ASYNC_INPUT_URI],
                    timeout_s=self.timeout_s,
                    poll_s=self.poll_s,
                )
            except CliError as error:
                check.problems.append(str(error))
                return check
            check.latency_ms = (time.perf_counter() - started) * 1000
            check_answer(check, image.with_name(image.name + ".json").read_bytes(), "async output")
        return check

    def batch(self, check: Check, outputs: dict[str, str]) -> Check:
        check.endpoint = outputs.get(contract.BATCH_JOB_NAME_PREFIX, "-") + "verify-*"
        check.instances = outputs.get(contract.BATCH_INSTANCE_TYPE, "-")
        batch_id = f"verify-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        with self.one_photo() as image, contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            try:
                batch.run(
                    self.aws, path=image, batch_id=batch_id, timeout_s=self.timeout_s, poll_s=self.poll_s
                )
            except CliError as error:
                check.problems.append(str(error))
                return check
            check.latency_ms = (time.perf_counter() - started) * 1000
            check.status = "Completed"
            check_answer(check, image.with_name(image.name + ".json").read_bytes(), f"batch {batch_id}")
        return check

    @contextlib.contextmanager
    def one_photo(self):
        """A folder of its own holding the photo: async and batch save results beside it."""
        folder = Path(tempfile.mkdtemp(prefix="d2sm-verify-"))
        try:
            image = folder / PHOTO.name
            shutil.copyfile(PHOTO, image)
            yield image
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def instances_of(endpoint: dict, variant: str | None) -> str:
    for described in endpoint.get("ProductionVariants", []):
        if variant is None or described.get("VariantName") == variant:
            if "CurrentServerlessConfig" in described:
                return "serverless"
            count = described.get("CurrentInstanceCount")
            return "-" if count is None else str(count)
    return "-"


def table(checks: list[Check]) -> str:
    header = ("mode", "endpoint", "status", "latency", "instances", "verdict")
    rows = [
        (
            c.mode,
            c.endpoint,
            c.status,
            "-" if c.latency_ms is None else f"{c.latency_ms:.0f} ms",
            c.instances,
            c.verdict,
        )
        for c in checks
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def run(aws: Aws, *, modes: list[str] | None, skip_batch: bool, timeout_s: float, poll_s: float) -> None:
    verifier = Verifier(aws, timeout_s=timeout_s, poll_s=poll_s)
    requested = list(dict.fromkeys(modes or MODES))
    checks: list[Check] = []
    for mode in requested:
        if mode == "batch" and skip_batch:
            checks.append(Check(mode, status="--skip-batch", skipped=True))
            continue
        stack = verifier.stack(mode)
        if stack is None:
            # Asked for by name, a missing stack is a failure; otherwise the mode is just not deployed.
            check = Check(mode, status="not deployed", skipped=modes is None)
            if modes is not None:
                check.problems.append(f"stack {aws.stack_name(STACKS[mode])} is not deployed")
            checks.append(check)
            continue
        checks += verifier.verify(mode, stack)
    print(table(checks))
    if all(c.skipped for c in checks):
        raise CliError(f"no stack of app {aws.app_name} is deployed: deploy it, or pass --app-name")
    failures = [(c, problem) for c in checks for problem in c.problems]
    for check, problem in failures:
        print(f"error: {check.mode}: {problem}", file=sys.stderr)
    if failures:
        failed = sum(1 for c in checks if c.problems)
        raise CliError(f"{failed} of {sum(1 for c in checks if not c.skipped)} checks failed")


def add_parser(commands, common) -> None:
    """`d2sm verify [--mode M]... [--skip-batch] [--timeout S] [--poll S]` on the CLI's subparsers."""
    command = commands.add_parser(
        "verify",
        parents=[common],
        help="prove every deployed mode answers correctly and runs the endpoint config its stack deployed",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    command.add_argument(
        "--mode",
        action="append",
        choices=MODES,
        help="verify only this mode (repeatable; default: every mode deployed under --app-name)",
    )
    command.add_argument(
        "--skip-batch", action="store_true", help="skip the batch check (a transform job: minutes)"
    )
    command.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds to wait for an async result, a batch job or a component's first copy (default 3600)",
    )
    command.add_argument("--poll", type=float, default=5.0, help="seconds between checks (default 5)")
    command.epilog = "Exit status 1 and one error: line per failure when any check fails."
    command.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> None:
    aws = Aws.from_args(args)
    if args.timeout <= 0 or args.poll <= 0:
        raise CliError("--timeout and --poll must be > 0")
    run(aws, modes=args.mode, skip_batch=args.skip_batch, timeout_s=args.timeout, poll_s=args.poll)
