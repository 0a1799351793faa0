"""Serverless endpoint: the CPU image sized by memory, optional provisioned concurrency."""

from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns

from constructs import Construct

from .endpoint import VARIANT_NAME, InferenceEndpoint
from .packaged_model import PackagedModel
from .scaling import ScalableProvisionedConcurrency
from .settings import MonitoringConfig, ServerlessConfig


class ServerlessEndpoint(InferenceEndpoint):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel,
        config: ServerlessConfig,
        name_prefix: str | None = None,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id, name_prefix=name_prefix)
        # Provisioned-concurrency scaling never blocks an update: there is no instance type to change.
        self.endpoint_name = self._endpoint_name(instance_type=None, autoscaled=False)
        self.metrics, self.alarms = self._monitor("serverless", monitoring, alarm_topic)
        self.endpoint_config, self.endpoint = self._create_endpoint(
            [
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    model_name=model.model_name,
                    serverless_config=sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                        memory_size_in_mb=config.memory_size_mb,
                        max_concurrency=config.max_concurrency,
                        provisioned_concurrency=config.provisioned_concurrency,
                    ),
                )
            ],
            autoscaled=False,
            deployment_config=self._deployment(config.rollout),
        )
        self.endpoint_arn = self.endpoint.ref
        self._let_roles_read_rollback_alarms([model.role], self._rollback_alarms(config.rollout))
        self.scaling: ScalableProvisionedConcurrency | None = None
        scaling = config.provisioned_concurrency_scaling
        if scaling is not None and config.provisioned_concurrency is not None:
            self.scaling = self.auto_scale_provisioned_concurrency(
                min_capacity=config.provisioned_concurrency, max_capacity=scaling.max_capacity
            )
            self.scaling.scale_on_utilization(target_utilization=scaling.target_utilization)

    def auto_scale_provisioned_concurrency(
        self, *, min_capacity: int, max_capacity: int
    ) -> ScalableProvisionedConcurrency:
        return self._auto_scale(
            ScalableProvisionedConcurrency,
            "ProvisionedConcurrency",
            min_capacity=min_capacity,
            max_capacity=max_capacity,
        )
