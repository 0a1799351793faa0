"""Encrypted storage every mode writes into: one KMS key, the artifacts bucket and its access-log bucket."""

from typing import cast

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3

import d2sm_contract as contract
from constructs import Construct

from .nag import acknowledge, skip_checkov


class ArtifactStore(Construct):
    """KMS key (rotation on) + SSL-only, versioned, private artifacts bucket logging to its own bucket.

    The bucket's layout is fixed here: async requests/results/failures and batch inputs/outputs live
    under the prefixes below. The key also encrypts the async notification topics. Both buckets and
    the key are retained on stack deletion: they hold user data.
    """

    # The layout the client relies on too (d2sm_contract says what each prefix holds).
    ASYNC_INPUT_PREFIX = contract.ASYNC_INPUT_PREFIX
    ASYNC_OUTPUT_PREFIX = contract.ASYNC_OUTPUT_PREFIX
    ASYNC_FAILURE_PREFIX = contract.ASYNC_FAILURE_PREFIX
    BATCH_INPUT_PREFIX = contract.BATCH_INPUT_PREFIX
    BATCH_SUBMIT_PREFIX = contract.BATCH_SUBMIT_PREFIX
    BATCH_OUTPUT_PREFIX = contract.BATCH_OUTPUT_PREFIX
    MODELS_PREFIX = contract.MODELS_PREFIX
    REALTIME_CAPTURE_PREFIX = contract.REALTIME_CAPTURE_PREFIX
    ASYNC_CAPTURE_PREFIX = contract.ASYNC_CAPTURE_PREFIX

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self._alarms_may_use_key = False
        self.key = kms.Key(
            self,
            "Key",
            description="Detectron2 SageMaker: artifacts bucket, async outputs and notifications",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Server access logs cannot be delivered to a bucket encrypted with a customer managed key.
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(365), noncurrent_version_expiration=Duration.days(30)
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.access_log_bucket,
            "AwsSolutions-S1",
            "This is the access-log target bucket; logging it into itself would loop.",
        )
        skip_checkov(
            self.access_log_bucket,
            "CKV_AWS_18",
            "This is the access-log target bucket; logging it into itself would loop.",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                    noncurrent_version_expiration=Duration.days(30),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

    def expire_objects_under(self, prefix: str, days: int) -> None:
        """Expire the objects under `prefix` `days` after they were written (versioning keeps the
        previous version for the bucket's noncurrent-version period)."""
        self.bucket.add_lifecycle_rule(prefix=f"{prefix}/", expiration=Duration.days(days))

    def send_events_to_event_bridge(self) -> None:
        """S3 sends the bucket's object events to EventBridge (rules pick what they need).

        Set on the bucket resource itself: the L2 `event_bridge_enabled` goes through a
        notifications custom resource (a Lambda function) for what is one property.
        """
        cfn_bucket = cast(s3.CfnBucket, self.bucket.node.default_child)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )

    def let_alarms_notify_through_key(self) -> None:
        """CloudWatch alarms may publish to topics encrypted with the key (alarm and batch topics)."""
        if self._alarms_may_use_key:
            return
        self._alarms_may_use_key = True
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )

    def let_logs_encrypt_with_key(self, log_group_patterns: list[str]) -> None:
        """CloudWatch Logs may encrypt the log groups named `log_group_patterns` (e.g.
        `/aws/vendedlogs/states/<app>-*`) with the key, and only those: the encryption context
        names the log group."""
        stack = Stack.of(self)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:Encrypt",
                    "kms:GenerateDataKey",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": [
                            stack.format_arn(
                                service="logs",
                                resource="log-group",
                                resource_name=pattern,
                                arn_format=ArnFormat.COLON_RESOURCE_NAME,
                            )
                            for pattern in log_group_patterns
                        ]
                    }
                },
            )
        )

    def objects_under(self, prefix: str) -> str:
        """ARN pattern of every object under `prefix`."""
        return self.bucket.arn_for_objects(f"{prefix}/*")

    def url_of(self, prefix: str) -> str:
        return self.bucket.s3_url_for_object(prefix)
