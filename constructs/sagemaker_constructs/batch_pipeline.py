"""Batch transform that runs itself: a submission marker in S3 starts exactly one transform job.

S3 (EventBridge notifications) -> a rule matching only `batch/submit/<batch-id>` -> a Step Functions
state machine that creates the transform job `<job_name_prefix><batch-id>` on the batch Model, polls
it with a doubling interval, counts the error objects among its results, writes
`batch/output/<batch-id>/_summary.json` and publishes that summary to a KMS-encrypted topic. An alarm
on failed, timed-out or aborted executions notifies the same topic.

The job name is derived from the batch id, so a re-delivered event or a re-written marker finds the
job already there and ends without a second job or a second notification. The tasks are AWS SDK
integrations with request-response polling rather than `createTransformJob.sync`: the SDK tasks get
a role scoped to this app's job names (CDK's SageMaker tasks attach AmazonSageMakerFullAccess unless
given a role), and every state type it uses runs in moto's Step Functions interpreter, which has
no `.sync`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from aws_cdk import CfnElement, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

import d2sm_contract as contract
from constructs import Construct

from .instance_types import is_gpu
from .nag import acknowledge, acknowledge_wildcard_resources, skip_checkov
from .packaged_model import PackagedModel
from .settings import BatchConfig
from .storage import ArtifactStore

ERROR_COUNT_FUNCTION_DIR = Path(__file__).resolve().parents[2] / "functions" / "batch_error_count"
SUMMARY_OBJECT = contract.BATCH_SUMMARY_OBJECT
# The polling interval doubles after each check until it is at least this long.
MAX_POLL_INTERVAL_S = 600
# Step Functions names AWS SDK errors <Service>.<Error>Exception. SageMaker models no throttling
# error, so a throttled call arrives as the generic SageMaker.SageMakerException.
THROTTLED = ["SageMaker.SageMakerException"]
# Account quota for the instance type in use (e.g. another batch still running): wait it out.
NO_CAPACITY = ["SageMaker.ResourceLimitExceededException"]
# The container's own switch (inference_server.settings.BatchRecordErrors): an image it cannot read
# becomes an error object in its `.out` file instead of failing the whole job.
RECORD_ERRORS_AS_OBJECTS = {contract.BATCH_RECORD_ERRORS_ENV: contract.BATCH_RECORD_ERRORS_AS_OBJECTS}
# SNS refuses a Subject over 100 characters (or with control characters, which an S3 key may hold):
# the subject is built from literals and the job status only; the batch id is in the message.
MAX_SUBJECT_LENGTH = 100
SUBJECT_STATUS_ROOM = len(": batch NotCreated")
# Log groups under the pipeline's stack name, so the shared key's policy can name them in advance.
STATE_MACHINE_LOG_GROUP = "/aws/vendedlogs/states/{stack_name}-pipeline"
ERROR_COUNT_LOG_GROUP = "/aws/lambda/{stack_name}-error-count"


def log_group_patterns(app_name: str) -> list[str]:
    """The names of every batch pipeline log group of the app `app_name` (its stack is
    `<app_name>-Batch`), as patterns for the key policy that lets CloudWatch Logs encrypt them."""
    return [
        template.format(stack_name=f"{app_name}-*")
        for template in (STATE_MACHINE_LOG_GROUP, ERROR_COUNT_LOG_GROUP)
    ]


class BatchTransformPipeline(Construct):
    """One transform job per submitted batch, its summary object, and a notification.

    `job_name_prefix` must be lowercase letters, digits and hyphens (SageMaker lowercases job ARNs,
    and the state machine's role is scoped to `transform-job/<prefix>*`).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel,
        config: BatchConfig,
        store: ArtifactStore,
        job_name_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.store = store
        self.config = config
        self.model = model
        self.job_name_prefix = job_name_prefix
        self.submit_prefix = f"{store.BATCH_SUBMIT_PREFIX}/"
        self.input_prefix = f"{store.BATCH_INPUT_PREFIX}/"
        self.output_prefix = f"{store.BATCH_OUTPUT_PREFIX}/"
        self.submit_uri = store.url_of(self.submit_prefix)
        self.input_uri = store.url_of(self.input_prefix)
        self.output_uri = store.url_of(self.output_prefix)
        self.job_arn_pattern = Stack.of(self).format_arn(
            service="sagemaker", resource="transform-job", resource_name=f"{job_name_prefix}*"
        )

        self.topic = sns.Topic(self, "Notifications", master_key=store.key, enforce_ssl=True)
        if config.notification_email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.notification_email))
        self.error_counter = self._error_counter()
        self.role = iam.Role(
            self,
            "StateMachineRole",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description="Batch transform pipeline: create and watch this app's transform jobs",
        )
        # Under /aws/vendedlogs/states/: Step Functions' log delivery then needs no per-log-group
        # resource policy (which has a size limit in busy accounts).
        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=STATE_MACHINE_LOG_GROUP.format(stack_name=Stack.of(self).stack_name),
            encryption_key=store.key,
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition()),
            role=self.role,
            timeout=Duration.hours(config.timeout_hours),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL),
            comment="One transform job per batch/submit/<batch-id> marker",
        )
        # Publishing to the encrypted topic and writing the summary (SSE-KMS bucket) use the key.
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[store.key.key_arn])
        )
        self._acknowledge_role_wildcards()
        _depend_on_policy_only(self.state_machine, self.role)
        self.rule = events.Rule(
            self,
            "SubmissionRule",
            description="A batch submission marker was written: batch/submit/<batch-id>",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [store.bucket.bucket_name]},
                    "object": {"key": [{"prefix": self.submit_prefix}]},
                },
            ),
            targets=[events_targets.SfnStateMachine(self.state_machine)],
        )
        self.failed_executions_alarm = self._failed_executions_alarm()

    # --- the state machine -------------------------------------------------------------------

    def _definition(self) -> sfn.IChainable:
        key = sfn.JsonPath.string_at("$.detail.object.key")
        read_event = sfn.Pass(
            self,
            "ReadSubmission",
            comment="The marker's S3 Object Created event, plus defaults that later states overwrite",
            parameters={
                "bucket": sfn.JsonPath.string_at("$.detail.bucket.name"),
                "key": key,
                "keyParts": sfn.JsonPath.string_split(key, "/"),
                "keyPartCount": sfn.JsonPath.array_length(sfn.JsonPath.string_split(key, "/")),
                "poll": {"seconds": self.config.poll_interval_seconds},
                # Null until counted (CDK drops None from Parameters; JSON null survives this way).
                "counts": sfn.JsonPath.string_to_json(
                    '{"outputs":null,"errorObjects":null,"errorObjectKeys":[]}'
                ),
            },
        )
        # A folder placeholder (`batch/submit/`, as the S3 console creates) or a nested key is not a
        # submission: ignored, not a failed execution that would fire the failure alarm.
        not_a_marker = sfn.Succeed(
            self,
            "NotABatchMarker",
            comment=f"A submission marker is {self.submit_prefix}<batch-id>, with no further '/': ignored",
        )
        batch_id = sfn.JsonPath.array_get_item(sfn.JsonPath.list_at("$.keyParts"), 2)
        bucket = sfn.JsonPath.string_at("$.bucket")
        name_the_job = sfn.Pass(
            self,
            "NameTheJob",
            comment="Everything about a batch follows from its id: one id, one job name",
            result_path="$.batch",
            parameters={
                "id": batch_id,
                "jobName": sfn.JsonPath.format(f"{self.job_name_prefix}{{}}", batch_id),
                "inputUri": sfn.JsonPath.format(f"s3://{{}}/{self.input_prefix}{{}}/", bucket, batch_id),
                "outputUri": sfn.JsonPath.format(f"s3://{{}}/{self.output_prefix}{{}}/", bucket, batch_id),
                "outputPrefix": sfn.JsonPath.format(f"{self.output_prefix}{{}}/", batch_id),
                "summaryKey": sfn.JsonPath.format(f"{self.output_prefix}{{}}/{SUMMARY_OBJECT}", batch_id),
            },
        )
        already_submitted = sfn.Succeed(
            self,
            "AlreadySubmitted",
            comment="This batch's job exists: a re-delivered event or a re-written marker starts nothing",
            output_path="$.batch",
        )
        job_status = {"status": sfn.JsonPath.string_at("$.TransformJobStatus")}
        # Not retried: "no such job" is the usual answer, and SageMaker reports it as the same generic
        # error as throttling. Any error leads to CreateTransformJob, which retries throttling and
        # whose name conflict is caught below.
        find_existing = self._describe_job(
            "FindExistingJob", retry=False, result_path="$.existingJob", result_selector=job_status
        )
        create = self._create_transform_job()
        # Two deliveries racing past FindExistingJob: SageMaker refuses the second job name, and the
        # job the first one created is there. Any other create error leaves no job.
        job_exists_after_error = self._describe_job(
            "JobExistsAfterCreateError", result_path="$.existingJob", result_selector=job_status
        )
        job_not_created = sfn.Pass(
            self,
            "JobNotCreated",
            result_path="$.summary",
            parameters=self._summary_fields(
                status="NotCreated", failure_reason=sfn.JsonPath.string_at("$.createError.Cause")
            ),
        )
        wait = sfn.Wait(self, "WaitForJob", time=sfn.WaitTime.seconds_path("$.poll.seconds"))
        describe = self._describe_job(
            "DescribeJob",
            result_path="$.job",
            result_selector={
                # FailureReason is absent unless the job failed: default it so the summary can read it.
                "outcome": sfn.JsonPath.json_merge(
                    sfn.JsonPath.string_to_json('{"FailureReason":null}'), sfn.JsonPath.object_at("$")
                )
            },
        )
        double_interval = sfn.Pass(
            self,
            "DoublePollInterval",
            result_path="$.poll",
            parameters={
                "seconds": sfn.JsonPath.math_add(
                    sfn.JsonPath.number_at("$.poll.seconds"), sfn.JsonPath.number_at("$.poll.seconds")
                )
            },
        )
        count = self._count_error_objects()
        build_summary = sfn.Pass(
            self,
            "BuildSummary",
            result_path="$.summary",
            parameters=self._summary_fields(
                status=sfn.JsonPath.string_at("$.job.outcome.TransformJobStatus"),
                failure_reason=sfn.JsonPath.string_at("$.job.outcome.FailureReason"),
            ),
        )
        write_summary = tasks.CallAwsService(
            self,
            "WriteSummary",
            service="s3",
            action="putObject",
            iam_action="s3:PutObject",
            iam_resources=[self.store.objects_under(self.store.BATCH_OUTPUT_PREFIX)],
            parameters={
                "Bucket": bucket,
                "Key": sfn.JsonPath.string_at("$.batch.summaryKey"),
                "Body": sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.summary")),
                "ContentType": "application/json",
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        subject_prefix = Stack.of(self).stack_name[: MAX_SUBJECT_LENGTH - SUBJECT_STATUS_ROOM]
        notify = tasks.SnsPublish(
            self,
            "Notify",
            topic=self.topic,
            subject=sfn.JsonPath.format(
                f"{subject_prefix}: batch {{}}", sfn.JsonPath.string_at("$.summary.status")
            ),
            message=sfn.TaskInput.from_text(sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.summary"))),
            result_path=sfn.JsonPath.DISCARD,
        )
        # The notification must go out even when the summary object could not be written.
        write_summary.add_catch(notify, result_path="$.summaryError")
        notify.add_retry(
            errors=[sfn.Errors.TASKS_FAILED],
            interval=Duration.seconds(2),
            backoff_rate=2,
            max_attempts=3,
            jitter_strategy=sfn.JitterType.FULL,
        )
        batch_failed = sfn.Fail(
            self,
            "BatchFailed",
            error="BatchFailed",
            cause="The batch's job failed or was not created; see the notification",
        )
        outcome = (
            sfn.Choice(self, "JobCompleted")
            .when(
                sfn.Condition.string_equals("$.summary.status", "Completed"),
                sfn.Succeed(self, "Done", output_path="$.summary"),
            )
            .otherwise(batch_failed)
        )

        status = "$.job.outcome.TransformJobStatus"
        find_existing.add_catch(create, result_path="$.lookupError")
        find_existing.next(already_submitted)
        create.add_catch(job_exists_after_error, result_path="$.createError")
        job_exists_after_error.add_catch(job_not_created, result_path="$.conflictCheckError")
        job_exists_after_error.next(already_submitted)
        job_not_created.next(write_summary)
        create.next(wait).next(describe).next(
            sfn.Choice(self, "JobEnded")
            .when(
                sfn.Condition.or_(
                    *(
                        sfn.Condition.string_equals(status, ended)
                        for ended in ("Completed", "Failed", "Stopped")
                    )
                ),
                count,
            )
            .otherwise(
                sfn.Choice(self, "LongerPoll")
                .when(sfn.Condition.number_greater_than_equals("$.poll.seconds", MAX_POLL_INTERVAL_S), wait)
                .otherwise(double_interval.next(wait))
            )
        )
        # Without counts the notification still goes out, with the counts left null.
        count.add_catch(build_summary, result_path="$.countError")
        count.next(build_summary).next(write_summary).next(notify).next(outcome)
        # A notification that still cannot go out does not change the batch's outcome: the summary
        # object holds the same document.
        notify.add_catch(outcome, result_path="$.notifyError")
        return read_event.next(
            sfn.Choice(self, "IsBatchMarker")
            .when(sfn.Condition.number_equals("$.keyPartCount", 3), name_the_job.next(find_existing))
            .otherwise(not_a_marker)
        )

    def _describe_job(self, state_id: str, *, retry: bool = True, **options) -> tasks.CallAwsService:
        describe = tasks.CallAwsService(
            self,
            state_id,
            service="sagemaker",
            action="describeTransformJob",
            iam_action="sagemaker:DescribeTransformJob",
            iam_resources=[self.job_arn_pattern],
            parameters={"TransformJobName": sfn.JsonPath.string_at("$.batch.jobName")},
            **options,
        )
        if not retry:
            return describe
        describe.add_retry(
            errors=THROTTLED,
            interval=Duration.seconds(2),
            backoff_rate=2,
            max_attempts=5,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return describe

    def _create_transform_job(self) -> tasks.CallAwsService:
        config = self.config
        resources = {"InstanceType": config.instance_type, "InstanceCount": config.instance_count}
        if is_gpu(config.instance_type):
            resources["TransformAmiVersion"] = config.transform_ami_version
        create = tasks.CallAwsService(
            self,
            "CreateTransformJob",
            comment="The job name is the batch's: SageMaker refuses a second job with it",
            service="sagemaker",
            action="createTransformJob",
            iam_action="sagemaker:CreateTransformJob",
            iam_resources=[self.job_arn_pattern],
            result_path="$.createdJob",
            parameters={
                "TransformJobName": sfn.JsonPath.string_at("$.batch.jobName"),
                "ModelName": self.model.model_name,
                "BatchStrategy": "SingleRecord",
                "MaxConcurrentTransforms": config.max_concurrent_transforms,
                "MaxPayloadInMB": config.max_payload_mb,
                "ModelClientConfig": {
                    "InvocationsTimeoutInSeconds": config.invocation_timeout_seconds,
                    "InvocationsMaxRetries": config.invocation_max_retries,
                },
                "Environment": {
                    **RECORD_ERRORS_AS_OBJECTS,
                    # The container's own per-request deadline agrees with the platform's.
                    contract.REQUEST_TIMEOUT_ENV: str(config.invocation_timeout_seconds),
                },
                "TransformInput": {
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": sfn.JsonPath.string_at("$.batch.inputUri"),
                        }
                    },
                    "ContentType": "application/x-image",
                    "SplitType": "None",
                    "CompressionType": "None",
                },
                "TransformOutput": {
                    "S3OutputPath": sfn.JsonPath.string_at("$.batch.outputUri"),
                    "Accept": "application/json",
                    "AssembleWith": "None",
                    "KmsKeyId": self.store.key.key_arn,
                },
                "TransformResources": resources,
            },
        )
        create.add_retry(
            errors=THROTTLED,
            interval=Duration.seconds(5),
            backoff_rate=2,
            max_attempts=4,
            jitter_strategy=sfn.JitterType.FULL,
        )
        create.add_retry(
            errors=NO_CAPACITY,
            interval=Duration.minutes(1),
            backoff_rate=2,
            max_attempts=6,
            max_delay=Duration.minutes(30),
            jitter_strategy=sfn.JitterType.FULL,
        )
        return create

    def _count_error_objects(self) -> tasks.LambdaInvoke:
        return tasks.LambdaInvoke(
            self,
            "CountErrorObjects",
            comment="How many images the container answered with an error object",
            lambda_function=self.error_counter,
            payload=sfn.TaskInput.from_object(
                {
                    "bucket": sfn.JsonPath.string_at("$.bucket"),
                    "prefix": sfn.JsonPath.string_at("$.batch.outputPrefix"),
                }
            ),
            result_selector={
                "outputs": sfn.JsonPath.number_at("$.Payload.outputs"),
                "errorObjects": sfn.JsonPath.number_at("$.Payload.errorObjects"),
                "errorObjectKeys": sfn.JsonPath.list_at("$.Payload.errorObjectKeys"),
            },
            result_path="$.counts",
        )

    def _summary_fields(self, *, status: str, failure_reason: str) -> dict:
        return {
            "batchId": sfn.JsonPath.string_at("$.batch.id"),
            "jobName": sfn.JsonPath.string_at("$.batch.jobName"),
            "status": status,
            "failureReason": failure_reason,
            "inputUri": sfn.JsonPath.string_at("$.batch.inputUri"),
            "outputUri": sfn.JsonPath.string_at("$.batch.outputUri"),
            "summaryUri": sfn.JsonPath.format(
                "s3://{}/{}", sfn.JsonPath.string_at("$.bucket"), sfn.JsonPath.string_at("$.batch.summaryKey")
            ),
            "outputs": sfn.JsonPath.number_at("$.counts.outputs"),
            "errorObjects": sfn.JsonPath.number_at("$.counts.errorObjects"),
            "errorObjectKeys": sfn.JsonPath.list_at("$.counts.errorObjectKeys"),
        }

    # --- the function, the role's leftovers, the alarm -------------------------------------------

    def _error_counter(self) -> lambda_.Function:
        store = self.store
        outputs = store.objects_under(store.BATCH_OUTPUT_PREFIX)
        log_group = logs.LogGroup(
            self,
            "ErrorCountLogs",
            log_group_name=ERROR_COUNT_LOG_GROUP.format(stack_name=Stack.of(self).stack_name),
            encryption_key=store.key,
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            "ErrorCountRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Batch transform pipeline: read the heads of batch results",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[store.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{self.output_prefix}*"]}},
            )
        )
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[outputs]))
        store.key.grant_decrypt(role)
        log_group.grant_write(role)
        function = lambda_.Function(
            self,
            "ErrorCount",
            description="Counts a batch's result objects and those that are the container's error objects",
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            code=lambda_.Code.from_asset(
                str(ERROR_COUNT_FUNCTION_DIR), exclude=["__pycache__", "*.pyc", ".pytest_cache"]
            ),
            handler="handler.count",
            memory_size=512,
            timeout=Duration.minutes(15),
            role=role,
            log_group=log_group,
        )
        _depend_on_policy_only(function, role)
        skip_checkov(
            function,
            "CKV_AWS_116",
            "Step Functions invokes the function synchronously and catches its errors (the summary is "
            "written without counts); a dead-letter queue only receives failed asynchronous invocations.",
        )
        skip_checkov(
            function,
            "CKV_AWS_117",
            "The function reads S3 objects only; a VPC would need NAT or an S3 endpoint and adds nothing "
            "to a function that accepts no network input.",
        )
        skip_checkov(
            function,
            "CKV_AWS_115",
            "One invocation per finished batch; reserving concurrency takes it from the account's "
            "unreserved pool, and fails the deploy in accounts at the minimum of 10 (new accounts).",
        )
        acknowledge_wildcard_resources(
            role, [outputs], "Results are created at run time under the batch output prefix."
        )
        acknowledge_wildcard_resources(
            role,
            [f"{log_group.log_group_arn}:*"],
            "Lambda names its log streams at run time inside the function's own log group.",
        )
        return function

    def _acknowledge_role_wildcards(self) -> None:
        store = self.store
        acknowledge_wildcard_resources(
            self.role,
            [self.job_arn_pattern],
            "Transform jobs are named at run time, one per batch, all under this app's job name prefix.",
        )
        acknowledge_wildcard_resources(
            self.role,
            [store.objects_under(store.BATCH_OUTPUT_PREFIX)],
            "Each batch's summary object is written at run time under the batch output prefix.",
        )
        acknowledge_wildcard_resources(
            self.role,
            [f"{self.error_counter.function_arn}:*"],
            "CDK's Lambda task may invoke any version or alias of the one error-count function.",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray trace writes and CloudWatch Logs delivery management (required for ALL-level "
            "execution logging) support no resource-level permissions.",
        )

    def _failed_executions_alarm(self) -> cloudwatch.Alarm:
        machine = self.state_machine
        period = Duration.minutes(5)
        alarm = cloudwatch.Alarm(
            self,
            "FailedExecutions",
            alarm_description="A batch pipeline execution failed, timed out or was aborted",
            metric=cloudwatch.MathExpression(
                expression="failed + timedOut + aborted",
                using_metrics={
                    "failed": machine.metric_failed(period=period, statistic="Sum"),
                    "timedOut": machine.metric_timed_out(period=period, statistic="Sum"),
                    "aborted": machine.metric_aborted(period=period, statistic="Sum"),
                },
                label="Failed, timed-out and aborted executions",
                period=period,
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))
        # The topic's own policy (TLS only) replaces SNS's default one, which let CloudWatch publish.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"ArnLike": {"aws:SourceArn": alarm.alarm_arn}},
            )
        )
        return alarm


def _depend_on_policy_only(resource: Construct, role: iam.Role) -> None:
    """CDK makes `resource` depend on its role and the role's policy; the role is already referenced
    by GetAtt, so keep only the policy (cfn-lint W3005 flags the redundant one)."""
    policy = cast(CfnElement, role.node.find_child("DefaultPolicy").node.default_child)
    cfn_resource = cast(CfnResource, resource.node.default_child)
    cfn_resource.add_override("DependsOn", [Stack.of(resource).get_logical_id(policy)])
