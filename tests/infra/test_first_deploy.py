"""What a first deploy and a first update on a real account need, read off the templates: updates
that CloudFormation can apply, resources a SageMaker rollback still uses, encrypted logs."""

import json

import pytest

from sagemaker_constructs.batch_pipeline import MAX_SUBJECT_LENGTH
from tests.synthesis import synthesize_config

from .cfn import flatten

OFF = {"enabled": False}
ONLY_SHARED = {"realtime": OFF, "async": OFF, "serverless": OFF, "batch": OFF}


def test_changing_model_description_changes_no_property_of_the_package_group(tmp_path):
    # The group's description is create-only and the group has a fixed name: CloudFormation could
    # not replace it, so the update would fail.
    before = synthesize_config(tmp_path / "before", {**ONLY_SHARED, "model": {"description": "first"}})
    after = synthesize_config(tmp_path / "after", {**ONLY_SHARED, "model": {"description": "second"}})

    _, group_before = before.only("shared", "AWS::SageMaker::ModelPackageGroup")
    _, group_after = after.only("shared", "AWS::SageMaker::ModelPackageGroup")
    _, package_after = after.only("shared", "AWS::SageMaker::ModelPackage")

    assert group_before == group_after
    # The description still describes the registered version (a new version, the group keeps both).
    assert package_after["Properties"]["ModelPackageDescription"] == "second"
    assert (
        group_after["Properties"]["ModelPackageGroupDescription"]
        == "Detectron2 Mask R-CNN instance segmentation"
    )


def test_the_group_description_is_its_own_setting(tmp_path):
    # For a group an earlier release created with another model.description: match it here.
    built = synthesize_config(
        tmp_path / "out", {**ONLY_SHARED, "model": {"package_group_description": "mine"}}
    )

    _, group = built.only("shared", "AWS::SageMaker::ModelPackageGroup")
    assert group["Properties"]["ModelPackageGroupDescription"] == "mine"


@pytest.mark.parametrize("fixture", ["synth", "prod_synth"])
def test_a_replaced_model_or_endpoint_config_is_retained_and_a_deleted_stack_deletes_it(fixture, request):
    """After a blue/green update SageMaker rolled back, the endpoint runs the previous config and
    Model: CloudFormation's cleanup of the replaced resources must not delete them."""
    built = request.getfixturevalue(fixture)
    found = [
        (key, resource_type, resource)
        for key in ["realtime", "async", "serverless", "batch"]
        for resource_type in ["AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig"]
        for resource in built.resources(key, resource_type).values()
    ]

    assert len(found) == 7
    for key, resource_type, resource in found:
        assert (resource.get("UpdateReplacePolicy"), resource.get("DeletionPolicy")) == (
            "Retain",
            "Delete",
        ), (
            key,
            resource_type,
        )


def test_every_log_group_is_encrypted_with_the_app_key_and_the_machine_logs_under_vendedlogs(synth):
    log_groups = {
        key: synth.resources(key, "AWS::Logs::LogGroup")
        for key in ["shared", "realtime", "async", "serverless", "batch"]
    }
    machine_logs = synth.template("batch")["Resources"]["PipelineExecutionLogsFBAC0865"]["Properties"]

    assert sum(len(groups) for groups in log_groups.values()) == 2
    for groups in log_groups.values():
        for group in groups.values():
            assert "ArtifactsKey" in flatten(group["Properties"]["KmsKeyId"])
    assert machine_logs["LogGroupName"] == "/aws/vendedlogs/states/Detectron2-Batch-pipeline"


def test_cloudwatch_logs_may_use_the_key_for_exactly_the_batch_log_groups(synth):
    (key,) = synth.resources("shared", "AWS::KMS::Key").values()
    (statement,) = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if "logs." in flatten(s.get("Principal", {}).get("Service", ""))
    ]
    names = [flatten(arn) for arn in statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]]
    log_groups = synth.resources("batch", "AWS::Logs::LogGroup").values()

    assert "kms:Decrypt" in statement["Action"] and "kms:GenerateDataKey" in statement["Action"]
    assert [name.rsplit(":log-group:", 1)[1] for name in names] == [
        "/aws/vendedlogs/states/Detectron2-*-pipeline",
        "/aws/lambda/Detectron2-*-error-count",
    ]
    for group in log_groups:
        name = group["Properties"]["LogGroupName"]
        assert any(
            name.startswith(pattern.split("*")[0]) and name.endswith(pattern.split("*")[1])
            for pattern in (n.rsplit(":log-group:", 1)[1] for n in names)
        )


def batch_states(synth) -> dict:
    (machine,) = synth.resources("batch", "AWS::StepFunctions::StateMachine").values()
    return json.loads(flatten(machine["Properties"]["DefinitionString"]))["States"]


def test_the_notification_subject_is_short_literal_text_and_a_failed_publish_ends_the_batch_normally(synth):
    notify = batch_states(synth)["Notify"]
    subject = notify["Parameters"]["Subject.$"]

    # Built from the stack name and the job status only: an S3 key (the batch id) could exceed
    # SNS's 100 characters or carry control characters, and SNS would refuse the publish.
    assert subject == "States.Format('Detectron2-Batch: batch {}', $.summary.status)"
    assert len("Detectron2-Batch: batch NotCreated") <= MAX_SUBJECT_LENGTH
    assert [r["ErrorEquals"] for r in notify["Retry"]] == [["States.TaskFailed"]]
    ((catch),) = notify["Catch"]
    assert (catch["ErrorEquals"], catch["Next"]) == (["States.ALL"], "JobCompleted")


def test_a_submission_folder_placeholder_ends_without_a_failed_execution(synth):
    states = batch_states(synth)

    assert states["NotABatchMarker"]["Type"] == "Succeed"
    assert "Fail" not in {state["Type"] for name, state in states.items() if name != "BatchFailed"}
