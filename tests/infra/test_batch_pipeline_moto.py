"""The batch pipeline end to end against moto's server on 127.0.0.1, with the state machine definition
taken from the synthesized template.

moto executes every state type the definition uses (Pass, Choice, Wait, Succeed, Fail, AWS SDK tasks
for SageMaker and S3, the SNS and Lambda integrations, intrinsic functions, Retry/Catch). What it
cannot do is stood in for, see batch_moto.py: the Lambda runtime (the function's real handler runs
in-process) and transform job progress (DescribeTransformJob answers scripted statuses).
"""

from __future__ import annotations

import fnmatch
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
import pytest

from sagemaker_constructs.settings import AppConfig
from stacks import build_stacks
from tests.scripts import load_script
from tests.synthesis import REPO_ROOT, cdk_json_context

from . import batch_moto
from .batch_moto import ACCOUNT, REGION, s3_object_created_event, states_entered, wait_for_execution

BUCKET = "detectron2-artifacts"
MODEL_NAME = "Model-batch-0123"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c3d-1111-2222-3333-444455556666"
FUNCTION_NAME = "batch-error-count"
JOB_PREFIX = "detectron2-batch-"
ERROR_OBJECT = b'{"error":{"code":"invalid_input","message":"cannot decode image","request_id":"r1"}}'
RESULT_OBJECT = b'{"instances":[],"image_size":[480,640]}'


def load_error_count_handler():
    path = REPO_ROOT / "functions" / "batch_error_count" / "handler.py"
    return load_script("batch_error_count_handler", path)


error_count = load_error_count_handler()


@pytest.fixture(scope="module")
def batch_template(tmp_path_factory) -> dict:
    """The batch stack as the app builds it, polling every second (the default is 60 s)."""
    outdir = tmp_path_factory.mktemp("cdk.out.batch-moto")
    app = cdk.App(context=cdk_json_context(), outdir=str(outdir), stack_traces=False)
    config = AppConfig.model_validate({"batch": {"poll_interval_seconds": 1}})
    stacks = build_stacks(app, config, container_dir=REPO_ROOT / "container")
    app.synth()
    return json.loads((outdir / f"{stacks.modes['batch'].stack_name}.template.json").read_text())


def only_resource(template: dict, resource_type: str) -> tuple[str, dict]:
    (found,) = [(k, v) for k, v in template["Resources"].items() if v["Type"] == resource_type]
    return found


def definition_with(template: dict, *, topic_arn: str, function_arn: str) -> str:
    """The synthesized DefinitionString with its intrinsics replaced by the moto resources."""
    _, machine = only_resource(template, "AWS::StepFunctions::StateMachine")
    model_id, _ = only_resource(template, "AWS::SageMaker::Model")
    topic_id, _ = only_resource(template, "AWS::SNS::Topic")
    function_id, _ = only_resource(template, "AWS::Lambda::Function")
    definition = machine["Properties"]["DefinitionString"]
    key_output = next(
        part
        for part in definition["Fn::Join"][1]
        if isinstance(part, dict)
        and "Fn::GetStackOutput" in part
        and "Key" in part["Fn::GetStackOutput"]["OutputName"]
    )

    def compact(value) -> str:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)

    tokens = {
        compact({"Ref": "AWS::Partition"}): "aws",
        compact({"Fn::GetAtt": [model_id, "ModelName"]}): MODEL_NAME,
        compact(key_output): KEY_ARN,
        compact({"Ref": topic_id}): topic_arn,
        compact({"Fn::GetAtt": [function_id, "Arn"]}): function_arn,
    }
    return batch_moto.resolve_definition(definition, tokens)


@dataclass
class Pipeline:
    moto: batch_moto.Moto
    machine_arn: str
    queue_url: str
    described: list[str]
    script: dict
    deliveries: int = 0

    @property
    def s3(self):
        return self.moto.client("s3")

    @property
    def sfn(self):
        return self.moto.client("stepfunctions")

    @property
    def sagemaker(self):
        return self.moto.client("sagemaker")

    def deliver(self, event: dict) -> dict:
        # EventBridge names each execution uniquely; moto's interpreter names an unnamed one "None",
        # so a second unnamed execution would collide with the first.
        self.deliveries += 1
        execution = self.sfn.start_execution(
            stateMachineArn=self.machine_arn, name=f"delivery-{self.deliveries}", input=json.dumps(event)
        )
        return wait_for_execution(self.sfn, execution["executionArn"])

    def upload_batch(self, batch_id: str, images: dict[str, bytes]) -> None:
        for name, body in images.items():
            self.s3.put_object(Bucket=BUCKET, Key=f"batch/input/{batch_id}/{name}", Body=body)

    def write_results(self, batch_id: str, results: dict[str, bytes]) -> None:
        """The `<image>.out` objects SageMaker would write (moto runs no container)."""
        for name, body in results.items():
            self.s3.put_object(Bucket=BUCKET, Key=f"batch/output/{batch_id}/{name}.out", Body=body)

    def notifications(self) -> list[dict]:
        sqs = self.moto.client("sqs")
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [json.loads(message["Body"]) for message in messages.get("Messages", [])]

    def jobs(self) -> list[str]:
        return [
            job["TransformJobName"] for job in self.sagemaker.list_transform_jobs()["TransformJobSummaries"]
        ]


@pytest.fixture
def pipeline(batch_template, monkeypatch) -> Iterator[Pipeline]:
    missing = batch_moto.interpreter_missing()
    if missing is not None:
        pytest.skip(missing)
    with batch_moto.moto_server(monkeypatch) as moto:
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        topic_arn = moto.client("sns").create_topic(Name="batch-notifications")["TopicArn"]
        sqs = moto.client("sqs")
        queue_url = sqs.create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        moto.client("sns").subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        role_arn = moto.client("iam").create_role(
            RoleName="batch-pipeline",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        function_arn = moto.client("lambda").create_function(
            FunctionName=FUNCTION_NAME,
            Runtime="python3.12",
            Role=role_arn,
            Handler="handler.count",
            Code={"ZipFile": _zip_of(REPO_ROOT / "functions" / "batch_error_count" / "handler.py")},
        )["FunctionArn"]
        machine_arn = moto.client("stepfunctions").create_state_machine(
            name="batch-pipeline",
            definition=definition_with(batch_template, topic_arn=topic_arn, function_arn=function_arn),
            roleArn=role_arn,
        )["stateMachineArn"]
        batch_moto.run_lambdas_in_process(
            monkeypatch, {FUNCTION_NAME: lambda event: error_count.count(event, s3=moto.client("s3"))}
        )
        batch_moto.enforce_job_names(monkeypatch)
        script: dict = {}
        described = batch_moto.script_job_statuses(monkeypatch, script)
        yield Pipeline(moto, machine_arn, queue_url, described, script)


def _zip_of(path: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(path, path.name)
    return buffer.getvalue()


def marker_event(batch_id: str) -> dict:
    return s3_object_created_event(BUCKET, f"batch/submit/{batch_id}")


# --- one submission, one job -------------------------------------------------------------------


def test_a_submission_creates_exactly_one_transform_job_with_the_batch_settings(pipeline):
    pipeline.upload_batch("b-001", {"a.jpg": b"jpeg", "b.jpg": b"jpeg", "c.png": b"png"})
    pipeline.write_results("b-001", {"a.jpg": RESULT_OBJECT, "b.jpg": ERROR_OBJECT, "c.png": RESULT_OBJECT})
    pipeline.script[f"{JOB_PREFIX}b-001"] = [("InProgress", None), ("InProgress", None), ("Completed", None)]

    execution = pipeline.deliver(marker_event("b-001"))

    assert execution["status"] == "SUCCEEDED"
    assert pipeline.jobs() == [f"{JOB_PREFIX}b-001"]
    job = pipeline.sagemaker.describe_transform_job(TransformJobName=f"{JOB_PREFIX}b-001")
    assert job["ModelName"] == MODEL_NAME
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["MaxConcurrentTransforms"] == 1
    assert job["MaxPayloadInMB"] == 6
    assert job["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3}
    assert job["Environment"] == {"BATCH_RECORD_ERRORS": "object", "REQUEST_TIMEOUT_S": "600"}
    assert job["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/input/b-001/"}
        },
        "ContentType": "application/x-image",
        "SplitType": "None",
        "CompressionType": "None",
    }
    assert job["TransformOutput"] == {
        "S3OutputPath": f"s3://{BUCKET}/batch/output/b-001/",
        "Accept": "application/json",
        "AssembleWith": "None",
        "KmsKeyId": KEY_ARN,
    }
    assert job["TransformResources"] == {
        "InstanceType": "ml.g4dn.xlarge",
        "InstanceCount": 1,
        "TransformAmiVersion": "al2-ami-sagemaker-batch-gpu-535",
    }


def test_the_pipeline_polls_with_a_doubling_interval_until_the_job_ends(pipeline):
    pipeline.upload_batch("b-002", {"a.jpg": b"jpeg"})
    pipeline.script[f"{JOB_PREFIX}b-002"] = [("InProgress", None), ("InProgress", None), ("Completed", None)]

    execution = pipeline.deliver(marker_event("b-002"))

    entered = states_entered(pipeline.sfn, execution["executionArn"])
    assert entered == [
        "ReadSubmission",
        "IsBatchMarker",
        "NameTheJob",
        "FindExistingJob",
        "CreateTransformJob",
        *["WaitForJob", "DescribeJob", "JobEnded", "LongerPoll", "DoublePollInterval"] * 2,
        "WaitForJob",
        "DescribeJob",
        "JobEnded",
        "CountErrorObjects",
        "BuildSummary",
        "WriteSummary",
        "Notify",
        "JobCompleted",
        "Done",
    ]
    history = pipeline.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
    waits = [
        json.loads(event["stateEnteredEventDetails"]["input"])["poll"]["seconds"]
        for event in history["events"]
        if event.get("stateEnteredEventDetails", {}).get("name") == "WaitForJob"
    ]
    assert waits == [1, 2, 4]


def test_success_notification_and_summary_object_carry_the_batch_outcome(pipeline):
    pipeline.upload_batch("b-003", {"a.jpg": b"jpeg", "b.jpg": b"jpeg", "c.png": b"png"})
    pipeline.write_results("b-003", {"a.jpg": RESULT_OBJECT, "b.jpg": ERROR_OBJECT, "c.png": RESULT_OBJECT})
    # As SageMaker answers for a completed job: no FailureReason (moto's own jobs carry "").
    pipeline.script[f"{JOB_PREFIX}b-003"] = [("Completed", None)]

    pipeline.deliver(marker_event("b-003"))

    expected = {
        "batchId": "b-003",
        "jobName": f"{JOB_PREFIX}b-003",
        "status": "Completed",
        "failureReason": None,
        "inputUri": f"s3://{BUCKET}/batch/input/b-003/",
        "outputUri": f"s3://{BUCKET}/batch/output/b-003/",
        "summaryUri": f"s3://{BUCKET}/batch/output/b-003/_summary.json",
        "outputs": 3,
        "errorObjects": 1,
        "errorObjectKeys": ["batch/output/b-003/b.jpg.out"],
    }
    assert pipeline.notifications() == [expected]
    summary = pipeline.s3.get_object(Bucket=BUCKET, Key="batch/output/b-003/_summary.json")
    assert json.loads(summary["Body"].read()) == expected
    assert summary["ContentType"] == "application/json"


# --- no second job --------------------------------------------------------------------------------


def test_a_second_delivery_of_the_same_event_starts_no_job_and_sends_no_notification(pipeline):
    pipeline.upload_batch("b-004", {"a.jpg": b"jpeg"})
    first = pipeline.deliver(marker_event("b-004"))
    assert len(pipeline.notifications()) == 1

    second = pipeline.deliver(marker_event("b-004"))

    assert first["status"] == second["status"] == "SUCCEEDED"
    assert pipeline.jobs() == [f"{JOB_PREFIX}b-004"]
    assert states_entered(pipeline.sfn, second["executionArn"]) == [
        "ReadSubmission",
        "IsBatchMarker",
        "NameTheJob",
        "FindExistingJob",
        "AlreadySubmitted",
    ]
    assert pipeline.notifications() == []


def test_two_deliveries_racing_past_the_lookup_still_start_one_job(pipeline, monkeypatch):
    pipeline.upload_batch("b-011", {"a.jpg": b"jpeg"})
    pipeline.deliver(marker_event("b-011"))
    pipeline.notifications()
    # The second delivery looks before the first one's job shows up, then tries to create it too.
    batch_moto.miss_first_lookup(monkeypatch, f"{JOB_PREFIX}b-011")

    second = pipeline.deliver(marker_event("b-011"))

    assert second["status"] == "SUCCEEDED"
    assert states_entered(pipeline.sfn, second["executionArn"]) == [
        "ReadSubmission",
        "IsBatchMarker",
        "NameTheJob",
        "FindExistingJob",
        "CreateTransformJob",
        "JobExistsAfterCreateError",
        "AlreadySubmitted",
    ]
    assert pipeline.jobs() == [f"{JOB_PREFIX}b-011"]
    assert pipeline.notifications() == []


def test_a_new_batch_id_starts_a_new_job(pipeline):
    for batch_id in ("b-005", "b-006"):
        pipeline.upload_batch(batch_id, {"a.jpg": b"jpeg"})
        assert pipeline.deliver(marker_event(batch_id))["status"] == "SUCCEEDED"

    assert sorted(pipeline.jobs()) == [f"{JOB_PREFIX}b-005", f"{JOB_PREFIX}b-006"]


# --- failures -------------------------------------------------------------------------------------


def test_a_failed_job_reaches_the_failure_notification(pipeline):
    reason = "ClientError: See job logs for more information"
    pipeline.upload_batch("b-007", {"a.jpg": b"jpeg"})
    pipeline.script[f"{JOB_PREFIX}b-007"] = [("InProgress", None), ("Failed", reason)]

    execution = pipeline.deliver(marker_event("b-007"))

    assert execution["status"] == "FAILED"
    assert execution["error"] == "BatchFailed"
    (notification,) = pipeline.notifications()
    assert notification["status"] == "Failed"
    assert notification["failureReason"] == reason
    assert notification["batchId"] == "b-007"
    assert notification["jobName"] == f"{JOB_PREFIX}b-007"
    assert notification["outputs"] == 0 and notification["errorObjects"] == 0


def test_a_job_sagemaker_refuses_reaches_the_failure_notification_as_not_created(pipeline):
    execution = pipeline.deliver(marker_event("bad_id"))

    assert execution["status"] == "FAILED"
    assert execution["error"] == "BatchFailed"
    assert pipeline.jobs() == []
    (notification,) = pipeline.notifications()
    assert notification["status"] == "NotCreated"
    assert notification["jobName"] == f"{JOB_PREFIX}bad_id"
    assert "at 'transformJobName' failed to satisfy constraint" in notification["failureReason"]
    assert notification["outputs"] is None and notification["errorObjects"] is None
    summary = pipeline.s3.get_object(Bucket=BUCKET, Key="batch/output/bad_id/_summary.json")
    assert json.loads(summary["Body"].read()) == notification


@pytest.mark.parametrize(
    "key",
    [
        "batch/submit/b-008/extra",
        # The S3 console's "Create folder" writes this placeholder.
        "batch/submit/",
    ],
)
def test_an_object_that_is_not_a_marker_is_ignored_without_failing(pipeline, key):
    execution = pipeline.deliver(s3_object_created_event(BUCKET, key))

    # Not a failed execution: the failed-executions alarm must not fire for a folder placeholder.
    assert execution["status"] == "SUCCEEDED"
    assert states_entered(pipeline.sfn, execution["executionArn"])[-1] == "NotABatchMarker"
    assert pipeline.jobs() == []
    assert pipeline.notifications() == []


# --- the execution role lists what a job lists ---------------------------------------------------


def string_like(pattern: str, value: str) -> bool:
    """IAM StringLike: `*` any run of characters, `?` one character, everything else literal."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def test_the_execution_role_may_list_exactly_the_prefix_a_transform_job_lists(pipeline, synth):
    pipeline.upload_batch("b-009", {"a.jpg": b"jpeg"})
    pipeline.deliver(marker_event("b-009"))
    job = pipeline.sagemaker.describe_transform_job(TransformJobName=f"{JOB_PREFIX}b-009")
    listed_prefix = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].removeprefix(
        f"s3://{BUCKET}/"
    )
    patterns = _listing_statement(synth)["Condition"]["StringLike"]["s3:prefix"]

    assert listed_prefix == "batch/input/b-009/"
    assert any(string_like(pattern, listed_prefix) for pattern in patterns)
    # The published input URI is listable too (it used to lack its trailing slash).
    published = synth.template("batch")["Outputs"]["InputUri"]["Value"]["Fn::Join"][1][-1]
    assert published == "/batch/input/"
    assert any(string_like(pattern, published.lstrip("/")) for pattern in patterns)
    assert not any(string_like(pattern, "batch/output/b-009/") for pattern in patterns)


def _listing_statement(synth) -> dict:
    (statement,) = [
        statement
        for resource in synth.resources("shared", "AWS::IAM::Policy").values()
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
        if statement["Action"] == "s3:ListBucket"
    ]
    return statement


# --- tried as a new user would --------------------------------------------------------------------


def test_a_new_user_uploads_a_folder_and_writes_the_marker(pipeline, batch_template, tmp_path):
    """README's steps against moto: upload a folder under a new batch id, then write the marker.

    moto routes S3 events to EventBridge and matches the rule's real pattern, but its rules cannot
    target Step Functions (moto/events/models.py send_to_targets: logs, archives, SQS, event buses):
    the rule targets a queue here, and the event it receives is the execution's input.
    """
    _, rule = only_resource(batch_template, "AWS::Events::Rule")
    pattern = json.loads(json.dumps(rule["Properties"]["EventPattern"]))
    pattern["detail"]["bucket"]["name"] = [BUCKET]
    s3, events, sqs = pipeline.s3, pipeline.moto.client("events"), pipeline.moto.client("sqs")
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    queue_url = sqs.create_queue(QueueName="rule-target")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="submission", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="submission", Targets=[{"Id": "pipeline", "Arn": queue_arn}])
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("street.jpg", "beach.jpg", "night.png", "broken.jpg"):
        (photos / name).write_bytes(b"image bytes")

    # The README's steps, with boto3 in place of `aws s3 cp --recursive` and `aws s3api put-object`.
    for photo in sorted(photos.iterdir()):
        s3.upload_file(str(photo), BUCKET, f"batch/input/street-2026-11-25/{photo.name}")
    s3.put_object(Bucket=BUCKET, Key="batch/submit/street-2026-11-25")

    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 1, "only the marker matches the rule, not the images"
    event = json.loads(received[0]["Body"])
    assert event["detail"]["object"]["key"] == "batch/submit/street-2026-11-25"

    execution = pipeline.deliver(event)

    assert execution["status"] == "SUCCEEDED"
    assert pipeline.jobs() == [f"{JOB_PREFIX}street-2026-11-25"]
    job = pipeline.sagemaker.describe_transform_job(TransformJobName=f"{JOB_PREFIX}street-2026-11-25")
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{BUCKET}/batch/input/street-2026-11-25/"
    )
    assert job["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/batch/output/street-2026-11-25/"
    assert job["TransformResources"]["InstanceType"] == "ml.g4dn.xlarge"
    assert job["Environment"]["BATCH_RECORD_ERRORS"] == "object"
    (notification,) = pipeline.notifications()
    assert notification["status"] == "Completed"


# --- the error-count function -------------------------------------------------------------------


@pytest.fixture
def results_bucket(monkeypatch):
    with batch_moto.moto_server(monkeypatch) as moto:
        moto.client("s3").create_bucket(Bucket=BUCKET)
        yield moto.client("s3")


def test_the_error_count_reads_every_result_and_ignores_other_objects(results_bucket):
    s3 = results_bucket
    for i in range(1, 1101):  # more than one ListObjectsV2 page
        body = ERROR_OBJECT if i % 7 == 0 else RESULT_OBJECT
        s3.put_object(Bucket=BUCKET, Key=f"batch/output/b-010/img{i:04}.jpg.out", Body=body)
    s3.put_object(Bucket=BUCKET, Key="batch/output/b-010/_summary.json", Body=b'{"error": "old"}')
    s3.put_object(Bucket=BUCKET, Key="batch/output/b-0100/x.jpg.out", Body=ERROR_OBJECT)
    s3.put_object(
        Bucket=BUCKET, Key="batch/output/b-010/spaced.jpg.out", Body=b' \n{ "error" : {"code": "x"}}'
    )
    s3.put_object(Bucket=BUCKET, Key="batch/output/b-010/empty.jpg.out", Body=b"")

    counted = error_count.count({"bucket": BUCKET, "prefix": "batch/output/b-010/"}, s3=s3)

    assert counted["outputs"] == 1102
    assert counted["errorObjects"] == 1100 // 7 + 1
    assert len(counted["errorObjectKeys"]) == 20
    assert counted["errorObjectKeys"][0] == "batch/output/b-010/img0007.jpg.out"
