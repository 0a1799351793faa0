"""The app as users run it: entry point, layout, one deployable stack per mode."""

import json
import os
import subprocess
import sys
import tarfile
from typing import cast

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import cx_api

from sagemaker_constructs.settings import AppConfig
from stacks import build_stacks
from tests.synthesis import REPO_ROOT, SHIPPED_ENVIRONMENTS, cdk_app, cdk_json_context, synthesize

from .cfn import flatten

MODE_STACKS = ["Detectron2-Async", "Detectron2-Batch", "Detectron2-Realtime", "Detectron2-Serverless"]


def stack_dependencies(assembly: cx_api.CloudAssembly) -> dict[str, list[str]]:
    return {
        stack.stack_name: sorted(
            d.id for d in stack.dependencies if isinstance(d, cx_api.CloudFormationStackArtifact)
        )
        for stack in assembly.stacks
    }


def test_each_mode_stack_depends_on_the_shared_stack_only(synth):
    """`cdk deploy <mode stack>` deploys the shared stack first and no other mode."""
    assert stack_dependencies(synth.assembly) == {
        "Detectron2-Shared": [],
        **{name: ["Detectron2-Shared"] for name in MODE_STACKS},
    }


def test_mode_stacks_never_reference_each_other(synth):
    for key in ["realtime", "async", "serverless", "batch"]:
        text = json.dumps(synth.template(key))
        others = [name for name in MODE_STACKS if name != synth.stack_name(key)]
        assert [name for name in others if name in text] == []


def test_a_disabled_mode_has_no_stack_and_no_permissions(tmp_path):
    off = {"enabled": False}
    config = AppConfig.model_validate({"realtime": off, "serverless": off, "batch": off})
    app = cdk.App(context=cdk_json_context(), outdir=str(tmp_path), stack_traces=False)

    stacks = build_stacks(app, config, container_dir=cdk_app.CONTAINER_DIR)

    assert stack_dependencies(app.synth()) == {
        "Detectron2-Shared": [],
        "Detectron2-Async": ["Detectron2-Shared"],
    }
    role_policy = json.dumps(
        stacks.shared.resolve(
            cast(iam.Policy, stacks.shared.execution_role.node.find_child("DefaultPolicy")).document.to_json()
        )
    )
    assert "async/input/*" in role_policy and "batch/" not in role_policy


def test_the_constructs_folder_does_not_shadow_the_constructs_library():
    import constructs
    import sagemaker_constructs

    assert not (REPO_ROOT / "constructs" / "__init__.py").exists()
    assert "site-packages" in constructs.__file__
    assert sagemaker_constructs.__file__ == str(
        REPO_ROOT / "constructs" / "sagemaker_constructs" / "__init__.py"
    )


def test_app_py_reports_a_bad_config_as_one_message_and_exit_status_1(tmp_path):
    environment = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"env": "no-such-env"}),
        "CDK_OUTDIR": str(tmp_path),
    }
    # app.py itself keeps jsii's Node 20 banner out of stderr.
    environment.pop("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", None)

    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid configuration (-c env=no-such-env):",
        f"  - env: no config/no-such-env.json; available: {', '.join(SHIPPED_ENVIRONMENTS)}",
    ]


def test_a_local_model_tarball_ships_as_an_s3_asset_the_role_can_read(tmp_path):
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(REPO_ROOT / "config" / "dev.json", arcname="metadata.json")

    synth = synthesize(tmp_path / "cdk.out", model_data=str(tarball))

    files = json.loads((synth.outdir / "Detectron2-Shared.assets.json").read_text())["files"]
    (asset_hash,) = [key for key, asset in files.items() if asset["source"]["path"].startswith("asset.")]
    object_url = f"s3://cdk-hnb659fds-assets-${{AWS::AccountId}}-${{AWS::Region}}/{asset_hash}.gz"
    _, package = synth.only("shared", "AWS::SageMaker::ModelPackage")
    assert package["Properties"]["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == {
        "Fn::Sub": object_url
    }
    (role_policy,) = synth.resources("shared", "AWS::IAM::Policy").values()
    readable = [
        flatten(resource)
        for statement in role_policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Action"] == "s3:GetObject"
        for resource in statement["Resource"]
    ]
    assert (
        f"arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-${{AWS::AccountId}}-${{AWS::Region}}/{asset_hash}.gz"
        in readable
    )
