"""cfn-lint and cdk-nag over the synthesized app."""

import json

import pytest
from aws_cdk import aws_s3 as s3
from cfnlint.api import ManualArgs, lint_by_config

from tests.synthesis import acknowledgements, build


def test_cfn_lint_finds_nothing_in_any_template(synth, prod_synth):
    templates = sorted(str(path) for s in (synth, prod_synth) for path in s.outdir.glob("*.template.json"))

    # One run over every template: cfn-lint loads its rules and specs once.
    findings = [str(match) for match in lint_by_config(ManualArgs(templates=templates))]

    assert len(templates) == 10
    assert findings == []


def test_cdk_nag_reports_no_unacknowledged_findings(synth):
    # Synthesis itself fails on any unacknowledged AwsSolutions finding; the report must be empty too.
    report = json.loads((synth.outdir / "validation-report.json").read_text())

    assert all(not plugin.get("violations") for plugin in report["pluginReports"])


# The batch pipeline's roles: run-time job names and result objects under fixed prefixes, the
# function's own log streams, and the actions with no resource-level permissions.
_SHARED_BUCKET = (
    '{"Fn::GetStackOutput":{"StackName":"Detectron2-Shared","Region":{"Ref":"AWS::Region"},'
    '"OutputName":"PublishOutputFnGetAttArtifactsBucket88671897Arn8A95CC21"}}'
)
_MACHINE = "/Detectron2-Batch/Pipeline/StateMachineRole Annotation::AwsSolutions-IAM5[Resource::"
_COUNTER = "/Detectron2-Batch/Pipeline/ErrorCountRole Annotation::AwsSolutions-IAM5[Resource::"
BATCH_PIPELINE_ACKNOWLEDGEMENTS = [
    f"{_MACHINE}arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:transform-job/detectron2-batch-*]",
    f"{_MACHINE}{_SHARED_BUCKET}/batch/output/*]",
    f"{_MACHINE}<PipelineErrorCountC8A87617.Arn>:*]",
    f"{_MACHINE}*]",
    f"{_COUNTER}{_SHARED_BUCKET}/batch/output/*]",
    f"{_COUNTER}<PipelineErrorCountLogsCDF59AA5.Arn>:*]",
]


def test_every_acknowledged_cdk_nag_rule_is_listed_here_with_a_reason(synth):
    role = "/Detectron2-Shared/ExecutionRole/Role Annotation::AwsSolutions-IAM5[Resource::"
    bucket = "<ArtifactsBucket88671897.Arn>"
    found = acknowledgements(synth.outdir)

    assert sorted(found) == sorted(
        [
            "/Detectron2-Shared/Artifacts/AccessLogs Annotation::AwsSolutions-S1",
            f"{role}*]",
            f"{role}arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/*]",
            *(
                f"{role}{bucket}/{prefix}/*]"
                for prefix in [
                    "models",
                    "async/input",
                    "async/output",
                    "async/failure",
                    "batch/input",
                    "batch/output",
                ]
            ),
            *BATCH_PIPELINE_ACKNOWLEDGEMENTS,
        ]
    )
    assert all(len(reason) > 40 for reason in found.values())


def test_cdk_nag_runs_on_every_synth(tmp_path):
    app, stacks = build(tmp_path)
    s3.Bucket(stacks.shared, "BucketWithoutSslPolicy")

    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-S10" in report and "BucketWithoutSslPolicy" in report
