"""Fine-grained assertions on the batch stack: the rule, the state machine, its role, the topic,
the alarm, the error-count function and the outputs of the batch convention."""

import json

import aws_cdk as cdk
import pytest

from sagemaker_constructs.settings import AppConfig
from stacks import build_stacks
from tests.synthesis import REPO_ROOT, cdk_json_context

from .cfn import as_list, flatten, statements
from .config_helpers import problem

BUCKET = "<Detectron2-Shared:PublishOutputRefArtifactsBucket88671897B2274564>"
BUCKET_ARN = "<Detectron2-Shared:PublishOutputFnGetAttArtifactsBucket88671897Arn8A95CC21>"
KEY_ARN = "<Detectron2-Shared:PublishOutputFnGetAttArtifactsKeyA4B22E2BArnEA32D36D>"
JOB_ARNS = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:transform-job/detectron2-batch-*"


def definition(synth) -> dict:
    _, machine = synth.only("batch", "AWS::StepFunctions::StateMachine")
    return json.loads(flatten(machine["Properties"]["DefinitionString"]))


def states(synth) -> dict:
    return definition(synth)["States"]


def role_statements(synth, role_prefix: str) -> dict[str, dict]:
    """action -> statement of the role whose logical id starts with `role_prefix` (one each)."""
    found = {}
    for policy in synth.resources("batch", "AWS::IAM::Policy").values():
        if any(flatten(role).startswith(f"<{role_prefix}") for role in policy["Properties"]["Roles"]):
            for statement in statements(policy["Properties"]["PolicyDocument"]):
                for action in as_list(statement["Action"]):
                    assert action not in found, f"{action} granted twice"
                    found[action] = statement
    return found


def test_batch_stack_outputs_follow_the_batch_convention(synth):
    outputs = synth.template("batch")["Outputs"]

    assert outputs["JobNamePrefix"]["Value"] == "detectron2-batch-"
    assert flatten(outputs["SubmitUri"]["Value"]) == f"s3://{BUCKET}/batch/submit/"
    assert flatten(outputs["InputUri"]["Value"]) == f"s3://{BUCKET}/batch/input/"
    assert flatten(outputs["OutputUri"]["Value"]) == f"s3://{BUCKET}/batch/output/"
    assert flatten(outputs["NotificationTopicArn"]["Value"]) == "<PipelineNotifications6D4DD3FC>"
    assert flatten(outputs["StateMachineArn"]["Value"]) == "<PipelineStateMachine1814BD05>"
    assert outputs["InstanceType"]["Value"] == "ml.g4dn.xlarge"
    assert outputs["TransformAmiVersion"]["Value"] == "al2-ami-sagemaker-batch-gpu-535"


def test_the_artifacts_bucket_sends_its_events_to_event_bridge(synth):
    bucket = synth.template("shared")["Resources"]["ArtifactsBucket88671897"]

    assert bucket["Properties"]["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert not synth.resources("shared", "Custom::S3BucketNotifications")


def test_the_rule_matches_only_submission_markers_in_the_artifacts_bucket(synth):
    _, rule = synth.only("batch", "AWS::Events::Rule")
    pattern = rule["Properties"]["EventPattern"]

    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert [flatten(name) for name in pattern["detail"]["bucket"]["name"]] == [BUCKET]
    assert pattern["detail"]["object"] == {"key": [{"prefix": "batch/submit/"}]}
    (target,) = rule["Properties"]["Targets"]
    assert flatten(target["Arn"]) == "<PipelineStateMachine1814BD05>"


def test_the_state_machine_creates_one_job_per_batch_and_finds_an_existing_one_first(synth):
    found = states(synth)
    create = found["CreateTransformJob"]

    assert definition(synth)["StartAt"] == "ReadSubmission"
    assert found["IsBatchMarker"]["Choices"] == [
        {"Variable": "$.keyPartCount", "NumericEquals": 3, "Next": "NameTheJob"}
    ]
    assert found["NameTheJob"]["Parameters"]["jobName.$"] == (
        "States.Format('detectron2-batch-{}', States.ArrayGetItem($.keyParts, 2))"
    )
    assert (
        found["FindExistingJob"]["Resource"]
        == "arn:<AWS::Partition>:states:::aws-sdk:sagemaker:describeTransformJob"
    )
    assert found["FindExistingJob"]["Next"] == "AlreadySubmitted"
    assert found["FindExistingJob"]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.lookupError", "Next": "CreateTransformJob"}
    ]
    assert found["AlreadySubmitted"]["Type"] == "Succeed"
    assert create["Resource"] == "arn:<AWS::Partition>:states:::aws-sdk:sagemaker:createTransformJob"
    # A create error is a duplicate when the job is there after all: end quietly, else notify.
    assert create["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.createError", "Next": "JobExistsAfterCreateError"}
    ]
    assert found["JobExistsAfterCreateError"]["Next"] == "AlreadySubmitted"
    assert found["JobExistsAfterCreateError"]["Catch"][0]["Next"] == "JobNotCreated"
    assert found["JobNotCreated"]["Parameters"]["status"] == "NotCreated"
    assert found["JobNotCreated"]["Next"] == "WriteSummary"


def test_the_job_parameters_cover_exactly_the_batch(synth):
    parameters = states(synth)["CreateTransformJob"]["Parameters"]

    assert parameters == {
        "TransformJobName.$": "$.batch.jobName",
        "ModelName": "<Model0301700E.ModelName>",
        "BatchStrategy": "SingleRecord",
        "MaxConcurrentTransforms": 1,
        "MaxPayloadInMB": 6,
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3},
        "Environment": {"BATCH_RECORD_ERRORS": "object", "REQUEST_TIMEOUT_S": "600"},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri.$": "$.batch.inputUri"}},
            "ContentType": "application/x-image",
            "SplitType": "None",
            "CompressionType": "None",
        },
        "TransformOutput": {
            "S3OutputPath.$": "$.batch.outputUri",
            "Accept": "application/json",
            "AssembleWith": "None",
            "KmsKeyId": KEY_ARN,
        },
        "TransformResources": {
            "InstanceType": "ml.g4dn.xlarge",
            "InstanceCount": 1,
            "TransformAmiVersion": "al2-ami-sagemaker-batch-gpu-535",
        },
    }
    assert states(synth)["NameTheJob"]["Parameters"]["inputUri.$"] == (
        "States.Format('s3://{}/batch/input/{}/', $.bucket, States.ArrayGetItem($.keyParts, 2))"
    )


def test_the_container_switch_is_the_one_the_server_reads():
    from inference_server.settings import BatchRecordErrors, Settings
    from sagemaker_constructs.batch_pipeline import RECORD_ERRORS_AS_OBJECTS

    settings = Settings.from_env({"SAGEMAKER_BATCH": "true", **RECORD_ERRORS_AS_OBJECTS})
    assert settings.batch_record_errors is BatchRecordErrors.OBJECT and settings.record_errors_as_objects


def test_throttling_and_capacity_errors_are_retried_with_backoff(synth):
    found = states(synth)

    assert found["CreateTransformJob"]["Retry"] == [
        {
            "ErrorEquals": ["SageMaker.SageMakerException"],
            "IntervalSeconds": 5,
            "MaxAttempts": 4,
            "BackoffRate": 2,
            "JitterStrategy": "FULL",
        },
        {
            "ErrorEquals": ["SageMaker.ResourceLimitExceededException"],
            "IntervalSeconds": 60,
            "MaxAttempts": 6,
            "BackoffRate": 2,
            "MaxDelaySeconds": 1800,
            "JitterStrategy": "FULL",
        },
    ]
    assert "Retry" not in found["FindExistingJob"], "any lookup error leads to CreateTransformJob"
    for name in ("DescribeJob", "JobExistsAfterCreateError"):
        assert found[name]["Retry"][0]["ErrorEquals"] == ["SageMaker.SageMakerException"]
        assert found[name]["Retry"][0]["BackoffRate"] == 2


def test_the_job_is_polled_with_a_doubling_interval_until_it_ends(synth):
    found = states(synth)

    assert found["ReadSubmission"]["Parameters"]["poll"] == {"seconds": 60}
    assert found["CreateTransformJob"]["Next"] == "WaitForJob"
    assert found["WaitForJob"] == {"Type": "Wait", "SecondsPath": "$.poll.seconds", "Next": "DescribeJob"}
    assert found["JobEnded"]["Choices"][0]["Next"] == "CountErrorObjects"
    assert [c["StringEquals"] for c in found["JobEnded"]["Choices"][0]["Or"]] == [
        "Completed",
        "Failed",
        "Stopped",
    ]
    assert found["JobEnded"]["Default"] == "LongerPoll"
    assert found["LongerPoll"]["Choices"] == [
        {"Variable": "$.poll.seconds", "NumericGreaterThanEquals": 600, "Next": "WaitForJob"}
    ]
    assert found["DoublePollInterval"]["Parameters"] == {
        "seconds.$": "States.MathAdd($.poll.seconds, $.poll.seconds)"
    }
    assert definition(synth)["TimeoutSeconds"] == 48 * 3600


def test_every_outcome_is_summarised_and_published(synth):
    found = states(synth)

    assert found["CountErrorObjects"]["Next"] == "BuildSummary"
    assert found["CountErrorObjects"]["Catch"][0]["Next"] == "BuildSummary"
    assert set(found["BuildSummary"]["Parameters"]) == {
        "batchId.$", "jobName.$", "status.$", "failureReason.$", "inputUri.$", "outputUri.$",
        "summaryUri.$", "outputs.$", "errorObjects.$", "errorObjectKeys.$",
    }  # fmt: skip
    assert found["WriteSummary"]["Resource"] == "arn:<AWS::Partition>:states:::aws-sdk:s3:putObject"
    assert found["WriteSummary"]["Parameters"]["Key.$"] == "$.batch.summaryKey"
    assert found["WriteSummary"]["Catch"][0]["Next"] == "Notify"
    assert found["Notify"]["Resource"] == "arn:<AWS::Partition>:states:::sns:publish"
    assert found["Notify"]["Parameters"]["TopicArn"] == "<PipelineNotifications6D4DD3FC>"
    assert found["Notify"]["Parameters"]["Message.$"] == "States.JsonToString($.summary)"
    assert found["JobCompleted"]["Default"] == "BatchFailed"
    assert found["BatchFailed"]["Type"] == "Fail"


def test_the_state_machine_logs_and_traces(synth):
    _, machine = synth.only("batch", "AWS::StepFunctions::StateMachine")

    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert flatten(machine["Properties"]["RoleArn"]) == "<PipelineStateMachineRole0B71C023.Arn>"


def test_the_state_machine_role_may_touch_only_this_apps_jobs_summaries_topic_and_function(synth):
    granted = role_statements(synth, "PipelineStateMachineRole")
    roles = synth.resources("batch", "AWS::IAM::Role")

    assert {flatten(r) for r in as_list(granted["sagemaker:CreateTransformJob"]["Resource"])} == {JOB_ARNS}
    assert {flatten(r) for r in as_list(granted["sagemaker:DescribeTransformJob"]["Resource"])} == {JOB_ARNS}
    assert flatten(granted["s3:PutObject"]["Resource"]) == f"{BUCKET_ARN}/batch/output/*"
    assert flatten(granted["sns:Publish"]["Resource"]) == "<PipelineNotifications6D4DD3FC>"
    assert flatten(granted["kms:GenerateDataKey"]["Resource"]) == KEY_ARN
    assert "iam:PassRole" not in granted, "CreateTransformJob passes no role: the Model carries it"
    assert not [action for action in granted if action == "*" or action.endswith(":*")]
    assert all("ManagedPolicyArns" not in role["Properties"] for role in roles.values())
    star = {action for action, statement in granted.items() if statement["Resource"] == "*"}
    assert star == {
        "logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups",
        "logs:DescribeResourcePolicies", "logs:GetLogDelivery", "logs:ListLogDeliveries",
        "logs:PutResourcePolicy", "logs:UpdateLogDelivery", "xray:GetSamplingRules",
        "xray:GetSamplingTargets", "xray:PutTelemetryRecords", "xray:PutTraceSegments",
    }  # fmt: skip


def test_the_error_count_function_reads_only_batch_results(synth):
    granted = role_statements(synth, "PipelineErrorCountRole")
    _, function = synth.only("batch", "AWS::Lambda::Function")

    assert function["Properties"]["Handler"] == "handler.count"
    assert function["Properties"]["Timeout"] == 900
    assert granted["s3:ListBucket"]["Condition"] == {"StringLike": {"s3:prefix": ["batch/output/*"]}}
    assert flatten(granted["s3:GetObject"]["Resource"]) == f"{BUCKET_ARN}/batch/output/*"
    assert flatten(granted["kms:Decrypt"]["Resource"]) == KEY_ARN
    assert set(granted) == {
        "s3:ListBucket",
        "s3:GetObject",
        "kms:Decrypt",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }


def test_the_topic_is_encrypted_and_tls_only(synth):
    _, topic = synth.only("batch", "AWS::SNS::Topic")
    _, policy = synth.only("batch", "AWS::SNS::TopicPolicy")

    assert flatten(topic["Properties"]["KmsMasterKeyId"]) == KEY_ARN
    deny, alarms = statements(policy["Properties"]["PolicyDocument"])
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert alarms["Effect"] == "Allow" and alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert alarms["Action"] == "sns:Publish"
    assert {k: flatten(v) for k, v in alarms["Condition"]["ArnLike"].items()} == {
        "aws:SourceArn": "<PipelineFailedExecutionsD5F6739E.Arn>"
    }


def test_cloudwatch_alarms_may_use_the_key_to_notify(synth):
    key_policy = synth.template("shared")["Resources"]["ArtifactsKeyA4B22E2B"]["Properties"]["KeyPolicy"]

    (alarms,) = [
        s for s in statements(key_policy) if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert alarms["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]


def test_the_alarm_counts_failed_timed_out_and_aborted_executions(synth):
    _, alarm = synth.only("batch", "AWS::CloudWatch::Alarm")
    metrics = {m["Id"]: m for m in alarm["Properties"]["Metrics"]}

    assert metrics["expr_1"]["Expression"] == "failed + timedOut + aborted"
    assert {m["MetricStat"]["Metric"]["MetricName"] for i, m in metrics.items() if i != "expr_1"} == {
        "ExecutionsFailed",
        "ExecutionsTimedOut",
        "ExecutionsAborted",
    }
    assert alarm["Properties"]["Threshold"] == 1
    assert alarm["Properties"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Properties"]["TreatMissingData"] == "notBreaching"
    assert [flatten(a) for a in alarm["Properties"]["AlarmActions"]] == ["<PipelineNotifications6D4DD3FC>"]


@pytest.mark.parametrize("resource", ["PipelineStateMachine1814BD05", "PipelineErrorCountC8A87617"])
def test_resources_wait_for_their_role_policy_only(synth, resource):
    depends = synth.template("batch")["Resources"][resource]["DependsOn"]

    assert len(depends) == 1 and "DefaultPolicy" in depends[0]


# --- transform settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"instance_count": 0}, "batch.instance_count: must be between 1 and 100 (got 0)"),
        (
            {"max_concurrent_transforms": 0},
            "batch.max_concurrent_transforms: must be between 1 and 100 (got 0)",
        ),
        ({"max_payload_mb": 101}, "batch.max_payload_mb: must be between 1 and 100 (got 101)"),
        (
            {"max_concurrent_transforms": 20, "max_payload_mb": 6},
            "batch.max_payload_mb: max_concurrent_transforms x max_payload_mb must be at most 100 "
            "(got 20 x 6 = 120)",
        ),
        (
            {"invocation_timeout_seconds": 3601},
            "batch.invocation_timeout_seconds: must be between 1 and 3600 (got 3601)",
        ),
        ({"invocation_max_retries": 4}, "batch.invocation_max_retries: must be between 0 and 3 (got 4)"),
        ({"poll_interval_seconds": 0}, "batch.poll_interval_seconds: must be between 1 and 3600 (got 0)"),
        ({"timeout_hours": 0}, "batch.timeout_hours: must be between 1 and 720 (got 0)"),
        (
            {"notification_email": "ops"},
            "batch.notification_email: must be an e-mail address such as ops@example.com (got 'ops')",
        ),
    ],
)
def test_invalid_transform_settings_name_the_field_and_the_allowed_values(tmp_path, overrides, message):
    problem(tmp_path, {"batch": overrides}, message)


def test_transform_settings_reach_the_job_and_an_email_subscribes(tmp_path):
    config = {
        "instance_type": "ml.c5.2xlarge",
        "instance_count": 2,
        "max_concurrent_transforms": 2,
        "max_payload_mb": 50,
        "invocation_timeout_seconds": 120,
        "invocation_max_retries": 0,
        "notification_email": "ops@example.com",
    }
    app = cdk.App(context=cdk_json_context(), outdir=str(tmp_path / "out"), stack_traces=False)
    stacks = build_stacks(
        app, AppConfig.model_validate({"batch": config}), container_dir=REPO_ROOT / "container"
    )
    app.synth()
    template = json.loads(
        (tmp_path / "out" / f"{stacks.modes['batch'].stack_name}.template.json").read_text()
    )
    machine = next(
        r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    )
    parameters = json.loads(flatten(machine["Properties"]["DefinitionString"]))["States"][
        "CreateTransformJob"
    ]["Parameters"]

    assert parameters["TransformResources"] == {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 2}
    assert parameters["MaxConcurrentTransforms"] == 2 and parameters["MaxPayloadInMB"] == 50
    assert parameters["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 120, "InvocationsMaxRetries": 0}
    assert parameters["Environment"]["REQUEST_TIMEOUT_S"] == "120"
    (subscription,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"]
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == "ops@example.com"
