"""Real-time endpoint: GPU instances behind InvokeEndpoint, scaled on invocations (never to zero)."""

from aws_cdk import Duration
from aws_cdk import aws_sns as sns
from constructs import Construct

from .endpoint import InferenceEndpoint, instance_variant
from .packaged_model import PackagedModel
from .scaling import ScalableInstanceCount
from .settings import MonitoringConfig, RealtimeConfig


class RealtimeEndpoint(InferenceEndpoint):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel,
        config: RealtimeConfig,
        name_prefix: str | None = None,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id, name_prefix=name_prefix)
        self._name_endpoint(instance_type=config.instance_type, autoscaled=config.scaling is not None)
        self._monitor("realtime", monitoring, alarm_topic)
        self._create_endpoint(
            instance_variant(
                model,
                instance_type=config.instance_type,
                initial_instance_count=config.initial_instance_count,
                inference_ami_version=config.inference_ami_version,
                container_startup_health_check_timeout_seconds=(
                    config.container_startup_health_check_timeout_seconds
                ),
                model_data_download_timeout_seconds=config.model_data_download_timeout_seconds,
            ),
            autoscaled=config.scaling is not None,
            deployment_config=self._deployment(config.rollout),
        )
        self.scaling: ScalableInstanceCount | None = None
        if config.scaling is not None:
            self.scaling = self.auto_scale_instance_count(
                min_capacity=config.scaling.min_capacity, max_capacity=config.scaling.max_capacity
            )
            self.scaling.scale_on_invocations(
                invocations_per_instance=config.scaling.target_invocations_per_instance,
                scale_in_cooldown=Duration.seconds(config.scaling.scale_in_cooldown_seconds),
                scale_out_cooldown=Duration.seconds(config.scaling.scale_out_cooldown_seconds),
            )

    def auto_scale_instance_count(self, *, min_capacity: int, max_capacity: int) -> ScalableInstanceCount:
        return self._auto_scale(
            ScalableInstanceCount, "InstanceCount", min_capacity=min_capacity, max_capacity=max_capacity
        )
