"""Real-time endpoint: GPU instances behind InvokeEndpoint, scaled on invocations (never to zero)."""

from aws_cdk import Duration
from constructs import Construct

from .data_capture import data_capture_config
from .endpoint import InferenceEndpoint, instance_variant
from .packaged_model import PackagedModel
from .scaling import ScalableInstanceCount
from .settings import RealtimeConfig
from .storage import ArtifactStore


class RealtimeEndpoint(InferenceEndpoint):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel,
        config: RealtimeConfig,
        store: ArtifactStore | None = None,
    ) -> None:
        """`store` receives the data capture; it is needed only when `config.data_capture` is set."""
        super().__init__(scope, construct_id)
        capture = None
        if config.data_capture is not None:
            if store is None:
                raise ValueError("data capture needs the artifact store that receives it")
            capture = data_capture_config(store, store.REALTIME_CAPTURE_PREFIX, config.data_capture)
        self._create_endpoint(
            [
                instance_variant(
                    model,
                    instance_type=config.instance_type,
                    initial_instance_count=config.initial_instance_count,
                    inference_ami_version=config.inference_ami_version,
                )
            ],
            autoscaled=config.scaling is not None,
            data_capture_config=capture,
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
