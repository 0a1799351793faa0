"""`versions`, `approve N`, `reject N`: the model package group's versions and their approval.

SageMaker deploys only Approved versions; approving or rejecting one changes no endpoint by itself
(a mode runs the version its config pins, see the docs' "Promotion by diff")."""

from __future__ import annotations

import argparse

from . import outputs, progress
from .aws import Aws, aws_errors
from .errors import CliError
from .progress import emit, note, say
from .status import MODES, Resolver, mode_rows, table

COLUMNS = ("version", "status", "created", "modes", "description")


def group_name(aws: Aws, explicit: str | None) -> str:
    return explicit or aws.stack_output(outputs.SHARED, outputs.MODEL_PACKAGE_GROUP_NAME)


def list_versions(aws: Aws, group: str) -> list[dict]:
    with aws_errors(f"listing the versions in model package group {group}"):
        pages = aws.sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group)
        summaries = [s for page in pages for s in page["ModelPackageSummaryList"]]
    return sorted(summaries, key=lambda s: s.get("ModelPackageVersion", 0))


def modes_by_version(aws: Aws) -> dict[str, list[str]]:
    """Which mode runs which version (from the deployed mode stacks; missing ones are skipped)."""
    resolver = Resolver(aws)
    running: dict[str, list[str]] = {}
    for mode in MODES:
        for row in mode_rows(aws, mode, resolver):
            version = row.get("version")
            if version and version != "-" and mode not in running.setdefault(version, []):
                running[version].append(mode)
    return running


def show_versions(args: argparse.Namespace) -> None:
    aws = Aws.from_args(args)
    group = group_name(aws, args.group)
    summaries = list_versions(aws, group)
    if not summaries:
        raise CliError(f"model package group {group} has no version")
    running = modes_by_version(aws)
    rows = []
    for summary in summaries:
        version = str(summary.get("ModelPackageVersion", "?"))
        rows.append(
            {
                "version": version,
                "status": summary.get("ModelApprovalStatus", "-"),
                "created": summary["CreationTime"].strftime("%Y-%m-%d %H:%M")
                if summary.get("CreationTime")
                else "-",
                "modes": ",".join(running.get(version, [])) or "-",
                "description": (summary.get("ModelPackageDescription") or "-")[:60],
                "arn": summary["ModelPackageArn"],
            }
        )
    if progress.JSON_OUTPUT:
        for row in rows:
            emit(row)
    else:
        say(table(rows, COLUMNS))


def set_approval(args: argparse.Namespace, status: str) -> None:
    aws = Aws.from_args(args)
    group = group_name(aws, args.group)
    matches = [s for s in list_versions(aws, group) if s.get("ModelPackageVersion") == args.version]
    if not matches:
        raise CliError(
            f"model package group {group} has no version {args.version} (`d2sm versions` lists them)"
        )
    arn = matches[0]["ModelPackageArn"]
    request = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if args.reason:
        request["ApprovalDescription"] = args.reason
    with aws_errors(f"setting version {args.version} to {status}"):
        aws.sagemaker.update_model_package(**request)
    if status == "Rejected" and (modes := modes_by_version(aws).get(str(args.version))):
        note(
            f"note: version {args.version} still runs in {', '.join(modes)}: rejecting it does not "
            "undeploy it"
        )
    emit({"version": args.version, "arn": arn, "status": status}, f"version {args.version}: {status} ({arn})")


def add_parser(commands, common) -> None:
    ver = commands.add_parser(
        "versions",
        parents=[common],
        help="the model package group's versions: status, created, modes running it",
    )
    ver.add_argument("--group", help="model package group (default: the Shared stack's output)")
    ver.set_defaults(handler=show_versions)
    for name, status in (("approve", "Approved"), ("reject", "Rejected")):
        sub = commands.add_parser(name, parents=[common], help=f"mark model package version N {status}")
        sub.add_argument("version", type=int, help="version number (`d2sm versions`)")
        sub.add_argument("--reason", help="ApprovalDescription recorded with the change")
        sub.add_argument("--group", help="model package group (default: the Shared stack's output)")
        sub.set_defaults(handler=lambda args, status=status: set_approval(args, status))
