"""Async endpoint: S3 in/out under the artifacts bucket, SNS notifications, scale to zero and back."""

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns

from constructs import Construct

from .data_capture import data_capture_config
from .endpoint import InferenceEndpoint, instance_variant
from .packaged_model import PackagedModel
from .scaling import ScalableAsyncInstanceCount
from .settings import AsyncConfig, MonitoringConfig
from .storage import ArtifactStore


class AsyncEndpoint(InferenceEndpoint):
    """Requests are S3 objects under the store's async input prefix; results and failures land
    under its output and failure prefixes, announced on two KMS-encrypted, SSL-only topics.

    The execution role's publish permission lives in this construct's stack (the topics do); the
    endpoint waits for it. On `config.instance_pools`, `pool_models` serve the pools whose type runs
    another specification than `model`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel,
        config: AsyncConfig,
        store: ArtifactStore,
        role: iam.IRole,
        name_prefix: str | None = None,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
        pool_models: Sequence[PackagedModel] = (),
    ) -> None:
        super().__init__(scope, construct_id, name_prefix=name_prefix)
        self.instance_types = config.instance_types
        self.endpoint_name = self._endpoint_name(
            instance_type=config.instance_type,
            autoscaled=config.scaling is not None,
            instance_pools=config.instance_pools,
        )
        self.metrics, self.alarms = self._monitor("async", monitoring, alarm_topic, self.instance_types)
        self.store = store
        self.success_topic = sns.Topic(self, "SuccessTopic", master_key=store.key, enforce_ssl=True)
        self.error_topic = sns.Topic(self, "ErrorTopic", master_key=store.key, enforce_ssl=True)
        self.input_uri = store.url_of(store.ASYNC_INPUT_PREFIX)
        self.output_uri = store.url_of(store.ASYNC_OUTPUT_PREFIX)
        self.failure_uri = store.url_of(store.ASYNC_FAILURE_PREFIX)
        self.notification_policy = iam.Policy(
            self,
            "NotificationPolicy",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["sns:Publish"],
                    resources=[self.success_topic.topic_arn, self.error_topic.topic_arn],
                )
            ],
        )
        self.endpoint_config, self.endpoint = self._create_endpoint(
            [instance_variant(model, config, pool_models=pool_models)],
            autoscaled=config.scaling is not None,
            deployment_config=self._deployment(config.rollout),
            data_capture_config=None
            if config.data_capture is None
            else data_capture_config(store, store.ASYNC_CAPTURE_PREFIX, config.data_capture),
            apply_on_update=[] if config.data_capture is None else ["DataCaptureConfig"],
            async_inference_config=sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
                client_config=sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                    max_concurrent_invocations_per_instance=config.concurrent_invocations_per_instance
                ),
                output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                    s3_output_path=self.output_uri,
                    s3_failure_path=self.failure_uri,
                    kms_key_id=store.key.key_arn,
                    notification_config=sagemaker.CfnEndpointConfig.AsyncInferenceNotificationConfigProperty(
                        success_topic=self.success_topic.topic_arn,
                        error_topic=self.error_topic.topic_arn,
                    ),
                ),
            ),
        )
        self.endpoint_arn = self.endpoint.ref
        self._let_roles_read_rollback_alarms([model.role], self._rollback_alarms(config.rollout))
        self.endpoint.node.add_dependency(self.notification_policy)
        self.scaling: ScalableAsyncInstanceCount | None = None
        if config.scaling is not None:
            self.scaling = self.auto_scale_instance_count(
                min_capacity=config.scaling.min_capacity, max_capacity=config.scaling.max_capacity
            )
            self.scaling.scale_on_backlog(
                backlog_per_instance=config.scaling.target_backlog_per_instance,
                scale_in_cooldown=Duration.seconds(config.scaling.scale_in_cooldown_seconds),
                scale_out_cooldown=Duration.seconds(config.scaling.scale_out_cooldown_seconds),
                cold_start=Duration.seconds(config.scaling.cold_start_seconds),
            )

    def auto_scale_instance_count(
        self, *, min_capacity: int, max_capacity: int
    ) -> ScalableAsyncInstanceCount:
        return self._auto_scale(
            ScalableAsyncInstanceCount, "InstanceCount", min_capacity=min_capacity, max_capacity=max_capacity
        )

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """InvokeEndpointAsync, write requests, read results and failures, use the store's key."""
        store = self.store
        grants = [
            (["sagemaker:InvokeEndpointAsync"], [self.endpoint_arn]),
            (["s3:PutObject"], [store.objects_under(store.ASYNC_INPUT_PREFIX)]),
            (
                ["s3:GetObject"],
                [
                    store.objects_under(store.ASYNC_OUTPUT_PREFIX),
                    store.objects_under(store.ASYNC_FAILURE_PREFIX),
                ],
            ),
            (["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], [store.key.key_arn]),
        ]
        combined, *others = [
            iam.Grant.add_to_principal(grantee=grantee, actions=actions, resource_arns=resource_arns)
            for actions, resource_arns in grants
        ]
        for grant in others:
            combined = combined.combine(grant)
        return combined
