"""`status`: what is deployed, per mode: stack, endpoint or component, its status, instances or
copies, and the model version it runs with that version's approval (as `kubectl get`)."""

from __future__ import annotations

import argparse

from botocore.exceptions import BotoCoreError, ClientError

from . import outputs, progress
from .aws import Aws, as_cli_error
from .errors import CliError
from .progress import emit, say

MODES = ("realtime", "serverless", "async", "batch")


def describe(call, action: str, **kwargs) -> dict | None:
    """The describe call's answer, or None when the resource does not exist."""
    try:
        return call(**kwargs)
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if error.response.get("Error", {}).get("Code") in {"ValidationException", "ValidationError"} and (
            "Could not find" in message or "does not exist" in message or "not found" in message.lower()
        ):
            return None
        raise as_cli_error(action, error) from None
    except BotoCoreError as error:
        raise as_cli_error(action, error) from None


class Resolver:
    """Model name -> (version, approval), each model package described once."""

    def __init__(self, aws: Aws):
        self.aws = aws
        self.packages: dict[str, dict | None] = {}

    def version_of_model(self, model_name: str | None) -> tuple[str, str]:
        if not model_name:
            return "-", "-"
        sagemaker = self.aws.sagemaker
        model = describe(sagemaker.describe_model, f"describing model {model_name}", ModelName=model_name)
        if model is None:
            return "-", "-"
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        package = container.get("ModelPackageName")
        if not package:
            return container.get("ModelDataUrl", "-"), "-"
        if package not in self.packages:
            self.packages[package] = describe(
                sagemaker.describe_model_package, f"describing {package}", ModelPackageName=package
            )
        described = self.packages[package]
        if described is None:
            return package.rsplit("/", 1)[-1], "deleted"
        return str(described.get("ModelPackageVersion", "-")), described.get("ModelApprovalStatus", "-")


def copies(runtime: dict) -> str:
    return f"{runtime.get('CurrentCopyCount', '?')}/{runtime.get('DesiredCopyCount', '?')} copies"


def endpoint_rows(aws: Aws, mode: str, stack: str, found: dict, resolver: Resolver) -> list[dict]:
    sagemaker = aws.sagemaker
    name = found.get(outputs.ENDPOINT_NAME)
    if not name:
        return [{"mode": mode, "stack": stack, "resource": "-", "status": "no EndpointName output"}]
    endpoint = describe(sagemaker.describe_endpoint, f"describing endpoint {name}", EndpointName=name)
    if endpoint is None:
        return [{"mode": mode, "stack": stack, "resource": f"endpoint {name}", "status": "missing"}]
    component = found.get(outputs.INFERENCE_COMPONENT_NAME)
    if component:
        described = describe(
            sagemaker.describe_inference_component,
            f"describing inference component {component}",
            InferenceComponentName=component,
        )
        if described is None:
            return [{"mode": mode, "stack": stack, "resource": f"component {component}", "status": "missing"}]
        runtime = described.get("RuntimeConfig", {})
        version, approval = resolver.version_of_model(described.get("Specification", {}).get("ModelName"))
        return [
            {
                "mode": mode,
                "stack": stack,
                "resource": f"component {component}",
                "status": described.get("InferenceComponentStatus", "-"),
                "capacity": copies(runtime),
                "version": version,
                "approval": approval,
            }
        ]
    config = describe(
        sagemaker.describe_endpoint_config,
        f"describing endpoint config {endpoint.get('EndpointConfigName')}",
        EndpointConfigName=endpoint.get("EndpointConfigName", ""),
    )
    models = {v["VariantName"]: v.get("ModelName") for v in (config or {}).get("ProductionVariants", [])}
    rows = []
    for variant in endpoint.get("ProductionVariants") or [{"VariantName": name}]:
        serverless = variant.get("CurrentServerlessConfig")
        if serverless:
            memory, most = serverless.get("MemorySizeInMB", "?"), serverless.get("MaxConcurrency", "?")
            capacity = f"serverless {memory} MB, max {most} concurrent"
        else:
            current, desired = (
                variant.get("CurrentInstanceCount", "?"),
                variant.get("DesiredInstanceCount", "?"),
            )
            capacity = f"{current}/{desired} instances"
        version, approval = resolver.version_of_model(models.get(variant["VariantName"]))
        rows.append(
            {
                "mode": mode,
                "stack": stack,
                "resource": f"endpoint {name}"
                + (f" [{variant['VariantName']}]" if len(endpoint.get("ProductionVariants", [])) > 1 else ""),
                "status": endpoint.get("EndpointStatus", "-"),
                "capacity": capacity,
                "version": version,
                "approval": approval,
            }
        )
    return rows


def batch_rows(aws: Aws, stack: str, found: dict, resolver: Resolver) -> list[dict]:
    model = found.get(outputs.BATCH_MODEL_NAME)
    version, approval = resolver.version_of_model(model)
    return [
        {
            "mode": "batch",
            "stack": stack,
            "resource": f"model {model or '-'}",
            "status": "ready (jobs start per batch)" if version != "-" else "model missing",
            "capacity": "-",
            "version": version,
            "approval": approval,
        }
    ]


def mode_rows(aws: Aws, mode: str, resolver: Resolver) -> list[dict]:
    stack = aws.stack_name(outputs.STACK_FOR_MODE[mode])
    cloudformation = aws.client("cloudformation")
    described = describe(cloudformation.describe_stacks, f"describing stack {stack}", StackName=stack)
    if described is None:
        return [{"mode": mode, "stack": stack, "resource": "-", "status": "not deployed"}]
    info = described["Stacks"][0]
    found = {o["OutputKey"]: o["OutputValue"] for o in info.get("Outputs", [])}
    rows = (
        batch_rows(aws, stack, found, resolver)
        if mode == "batch"
        else endpoint_rows(aws, mode, stack, found, resolver)
    )
    for row in rows:
        row["stack_status"] = info.get("StackStatus", "-")
    return rows


COLUMNS = ("mode", "resource", "status", "capacity", "version", "approval", "stack_status")


def table(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """Aligned columns with an upper-case header, as `kubectl get` prints them."""
    cells = [[str(row.get(c, "-")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    aws = Aws.from_args(args)
    resolver = Resolver(aws)
    rows = [row for mode in (args.modes or MODES) for row in mode_rows(aws, mode, resolver)]
    if all(row["status"] == "not deployed" for row in rows):
        raise CliError(f"no {aws.app_name}-* mode stack is deployed (--app-name?)")
    if progress.JSON_OUTPUT:
        for row in rows:
            emit(row)
    else:
        say(table(rows))


def add_parser(commands, common) -> None:
    sta = commands.add_parser(
        "status", parents=[common], help="per mode: endpoint or component, status, capacity, model version"
    )
    sta.add_argument(
        "modes", nargs="*", type=mode_name, metavar="MODE", help=f"any of {', '.join(MODES)} (default all)"
    )
    sta.set_defaults(handler=run)


def mode_name(text: str) -> str:
    # A type check rather than `choices`: argparse checks an empty nargs="*" list against choices.
    if text not in MODES:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r} (choose from {', '.join(MODES)})")
    return text
