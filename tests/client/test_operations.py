"""`status`, `versions`, `approve`/`reject`, `logs`, `completion`, `--version` against moto."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import boto3
import pytest
from moto.sagemaker.models import sagemaker_backends

from d2sm import __version__

from .helpers import ACCOUNT, APP, ENDPOINTS, GPU_IMAGE, GROUP, INITIAL_MODEL, REGION, d2sm, d2sm_process

ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}"


def add_version(approval: str = "PendingManualApproval") -> str:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelPackageDescription="retrained",
        ModelApprovalStatus=approval,
        InferenceSpecification={
            "Containers": [{"Image": GPU_IMAGE, "ModelDataUrl": INITIAL_MODEL}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_status_lists_every_mode_with_its_version(deployed, capsys):
    run = d2sm(capsys, "status", "--json")
    assert run.code == 0, run.err
    rows = [json.loads(line) for line in run.out.splitlines()]
    assert [(r["mode"], r["resource"], r["status"], r["version"], r["approval"]) for r in rows] == [
        ("realtime", f"endpoint {ENDPOINTS['Realtime']}", "InService", "1", "Approved"),
        ("serverless", f"endpoint {ENDPOINTS['Serverless']}", "InService", "1", "Approved"),
        ("async", f"endpoint {ENDPOINTS['Async']}", "InService", "1", "Approved"),
        ("batch", "model Batch-model", "ready (jobs start per batch)", "1", "Approved"),
    ]
    assert rows[0]["capacity"] == "1/1 instances"
    assert rows[0]["stack"] == f"{APP}-Realtime" and rows[0]["stack_status"] == "CREATE_COMPLETE"


def test_status_table_shows_a_missing_stack_and_a_creating_endpoint(deployed, capsys):
    boto3.client("cloudformation", region_name=REGION).delete_stack(StackName=f"{APP}-Serverless")
    sagemaker_backends[ACCOUNT][REGION].endpoints[ENDPOINTS["Realtime"]].endpoint_status = "Updating"
    run = d2sm(capsys, "status", "realtime", "serverless")
    assert run.code == 0, run.err
    header, realtime, serverless = run.out.splitlines()
    assert header.split() == ["MODE", "RESOURCE", "STATUS", "CAPACITY", "VERSION", "APPROVAL", "STACK_STATUS"]
    assert realtime.split() == [
        "realtime",
        "endpoint",
        ENDPOINTS["Realtime"],
        "Updating",
        "1/1",
        "instances",
    ] + [
        "1",
        "Approved",
        "CREATE_COMPLETE",
    ]
    assert serverless.split()[:4] == ["serverless", "-", "not", "deployed"]


def test_status_with_nothing_deployed_is_one_line(deployed, capsys):
    run = d2sm(capsys, "status", "--app-name", "Nothing")
    assert (run.code, run.err) == (1, "error: no Nothing-* mode stack is deployed (--app-name?)\n")


def test_versions_then_approve_and_reject(deployed, capsys):
    add_version()
    listed = d2sm(capsys, "versions", "--json")
    assert listed.code == 0, listed.err
    rows = [json.loads(line) for line in listed.out.splitlines()]
    assert [(r["version"], r["status"], r["modes"]) for r in rows] == [
        ("1", "Approved", "realtime,serverless,async,batch"),
        ("2", "PendingManualApproval", "-"),
    ]

    approved = d2sm(capsys, "approve", "2", "--reason", "mAP +2")
    assert approved.code == 0, approved.err
    assert approved.out == f"version 2: Approved ({ARN}/2)\n"
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    described = sagemaker.describe_model_package(ModelPackageName=f"{ARN}/2")
    assert (described["ModelApprovalStatus"], described["ApprovalDescription"]) == ("Approved", "mAP +2")

    rejected = d2sm(capsys, "reject", "1")
    assert rejected.code == 0, rejected.err
    assert rejected.err == (
        "note: version 1 still runs in realtime, serverless, async, batch: rejecting it does not "
        "undeploy it\n"
    )
    assert sagemaker.describe_model_package(ModelPackageName=f"{ARN}/1")["ModelApprovalStatus"] == "Rejected"

    table = d2sm(capsys, "versions")
    assert table.out.splitlines()[0].split() == ["VERSION", "STATUS", "CREATED", "MODES", "DESCRIPTION"]
    assert table.out.splitlines()[2].split()[:2] == ["2", "Approved"]


def test_approve_an_unknown_version_is_one_line(deployed, capsys):
    run = d2sm(capsys, "approve", "9")
    assert (run.code, run.err) == (
        1,
        f"error: model package group {GROUP} has no version 9 (`d2sm versions` lists them)\n",
    )


def put_log_lines(group: str, lines: list[tuple[float, str]]) -> None:
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-0123")
    events = [{"timestamp": int(at * 1000), "message": message} for at, message in lines]
    logs.put_log_events(logGroupName=group, logStreamName="AllTraffic/i-0123", logEvents=events)


def test_logs_prints_recent_lines_only(deployed, capsys):
    now = time.time()
    group = f"/aws/sagemaker/Endpoints/{ENDPOINTS['Realtime']}"
    put_log_lines(group, [(now - 7200, "old line"), (now - 60, "model loaded"), (now - 30, "POST 200")])

    run = d2sm(capsys, "logs", "realtime", "--since", "10m", "--json")

    assert run.code == 0, run.err
    assert [json.loads(line)["message"] for line in run.out.splitlines()] == ["model loaded", "POST 200"]
    wide = d2sm(capsys, "logs", "realtime", "--since", "3h")
    assert [line.split(" ", 2)[2] for line in wide.out.splitlines()] == [
        "old line",
        "model loaded",
        "POST 200",
    ]
    assert wide.out.splitlines()[0].split(" ")[1] == "i-0123"


def test_logs_follow_stops_on_ctrl_c(deployed, capsys, monkeypatch):
    group = f"/aws/sagemaker/Endpoints/{ENDPOINTS['Async']}"
    put_log_lines(group, [(time.time() - 5, "first")])
    from d2sm import logs

    polls = []

    def sleep(seconds):
        # The second poll finds a new line; then a real SIGINT ends --follow, as Ctrl-C does.
        polls.append(seconds)
        if len(polls) == 1:
            boto3.client("logs", region_name=REGION).put_log_events(
                logGroupName=group,
                logStreamName="AllTraffic/i-0123",
                logEvents=[{"timestamp": int(time.time() * 1000), "message": "second"}],
            )
        else:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(logs.time, "sleep", sleep)
    run = d2sm(capsys, "logs", "async", "--follow", "--poll", "0.01")
    assert run.code == 0, run.err
    assert [line.split(" ", 2)[2] for line in run.out.splitlines()] == ["first", "second"]


def test_logs_of_an_endpoint_that_never_logged(deployed, capsys):
    run = d2sm(capsys, "logs", "serverless")
    assert (run.code, run.err) == (
        1,
        f"error: log group /aws/sagemaker/Endpoints/{ENDPOINTS['Serverless']} does not exist (nothing has "
        "logged there yet)\n",
    )


def test_version_flag():
    result = d2sm_process("--version", env={"PATH": os.environ["PATH"]})
    assert (result.returncode, result.stdout) == (0, f"d2sm {__version__}\n")


def test_help_lists_the_commands():
    result = d2sm_process("--help", env={"PATH": os.environ["PATH"]})
    for command in ("serve", "invoke", "status", "versions", "approve", "reject", "logs", "results", "bench"):
        assert f"\n    {command} " in result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_name_every_command_and_parse(capsys, shell, tmp_path):
    run = d2sm(capsys, "completion", shell)
    assert run.code == 0, run.err
    for word in ("serve", "invoke", "versions", "--inference-component", "--out-dir", "--follow"):
        assert word in run.out
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed to check the syntax")
    script = tmp_path / f"d2sm.{shell}"
    script.write_text(run.out)
    check = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_bash_completion_completes_a_subcommands_flags(capsys, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    script = tmp_path / "d2sm.bash"
    script.write_text(d2sm(capsys, "completion", "bash").out)
    probe = (
        f"source {script}; COMP_WORDS=(d2sm invoke photo.jpg --inf); COMP_CWORD=3; _d2sm; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert result.stdout == "--inference-component\n", result.stderr


def test_status_of_an_inference_component(deployed, capsys, monkeypatch):
    """moto has no inference components: DescribeInferenceComponent is answered as SageMaker
    documents it; everything else comes from moto."""
    from d2sm.aws import Aws

    from .helpers import stack

    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.delete_stack(StackName=f"{APP}-Realtime")
    stack(
        cloudformation,
        f"{APP}-Realtime",
        {"EndpointName": ENDPOINTS["Realtime"], "InferenceComponentName": "detectron2-ic"},
    )
    real_client = Aws.client
    asked = []

    def client(self, service):
        made = real_client(self, service)
        if service == "sagemaker":

            def describe_inference_component(InferenceComponentName):
                asked.append(InferenceComponentName)
                return {
                    "InferenceComponentName": InferenceComponentName,
                    "InferenceComponentStatus": "InService",
                    "Specification": {"ModelName": "Realtime-model"},
                    "RuntimeConfig": {"DesiredCopyCount": 2, "CurrentCopyCount": 1},
                }

            made.describe_inference_component = describe_inference_component
        return made

    monkeypatch.setattr(Aws, "client", client)
    run = d2sm(capsys, "status", "realtime", "--json")
    assert run.code == 0, run.err
    [row] = [json.loads(line) for line in run.out.splitlines()]
    assert asked == ["detectron2-ic"]
    assert (row["resource"], row["status"], row["capacity"], row["version"], row["approval"]) == (
        "component detectron2-ic",
        "InService",
        "1/2 copies",
        "1",
        "Approved",
    )
