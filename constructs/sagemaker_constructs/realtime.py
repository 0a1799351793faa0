"""Real-time endpoint: GPU instances behind InvokeEndpoint, scaled on invocations (never to zero).

Optionally an experiment: weighted production variants (A/B), each with its own registered version
and autoscaling, or one production variant with a shadow variant; and data capture.
"""

import hashlib
from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_sns as sns

from constructs import Construct

from .data_capture import data_capture_config
from .endpoint import VARIANT_NAME, InferenceEndpoint, endpoint_name, instance_variant
from .monitoring import EndpointAlarms, EndpointMetrics
from .packaged_model import PackagedModel
from .rollout import blue_green_deployment
from .scaling import ScalableInstanceCount
from .settings import MonitoringConfig, RealtimeConfig, RealtimeScaling, VariantPlan
from .storage import ArtifactStore


class RealtimeEndpoint(InferenceEndpoint):
    """One variant per `config.production_variants()` (plus `config.shadow_variant()`).

    `model` serves every variant not named in `models` (by default the one `AllTraffic` variant);
    `models` maps variant names, the shadow's included, to the model that variant deploys.
    `store` receives the data capture; it is needed only when `config.data_capture` is set.
    On `config.instance_pools`, `pool_models` serve the pools whose type runs another
    specification than `model` (the CPU model of a GPU-then-CPU list).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel | None = None,
        config: RealtimeConfig,
        models: Mapping[str, PackagedModel] | None = None,
        store: ArtifactStore | None = None,
        name_prefix: str | None = None,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
        pool_models: Sequence[PackagedModel] = (),
    ) -> None:
        super().__init__(scope, construct_id, name_prefix=name_prefix)
        models = dict(models or {})
        pooled = config.instance_pools is not None
        capture = None
        if config.data_capture is not None:
            if store is None:
                raise ValueError("data capture needs the artifact store that receives it")
            capture = data_capture_config(store, store.REALTIME_CAPTURE_PREFIX, config.data_capture)

        def variant(plan: VariantPlan):
            chosen = models.get(plan.name, model)
            if chosen is None:
                raise ValueError(f"no model for variant {plan.name!r}")
            return instance_variant(
                chosen,
                config,
                # Pools are refused beside variants and a shadow: the one variant takes them.
                instance_type=None if pooled else plan.instance_type,
                initial_instance_count=plan.initial_instance_count,
                variant_name=plan.name,
                initial_variant_weight=plan.weight,
                pool_models=pool_models,
            )

        plans = config.production_variants()
        shadow = config.shadow_variant()
        self.variant_names = [plan.name for plan in plans]
        self.shadow_variant_name = None if shadow is None else shadow.name
        self.endpoint_name = self._experiment_endpoint_name(plans, config.instance_pools)
        self.instance_types = config.instance_types
        self.metrics, self.alarms, self.variant_alarms = self._monitor_variants(monitoring, alarm_topic)
        names = [*self.variant_names, *filter(None, [self.shadow_variant_name])]
        # Every variant's metrics (the shadow's too, for the dashboard).
        self.variant_metrics = {name: EndpointMetrics(self.endpoint_name, name, "realtime") for name in names}
        rollback_alarms = [alarm for alarms in self.variant_alarms.values() for alarm in alarms.rollback]
        self.endpoint_config, self.endpoint = self._create_endpoint(
            [variant(plan) for plan in plans],
            autoscaled=any(plan.scaling is not None for plan in plans),
            deployment_config=blue_green_deployment(config.rollout, rollback_alarms),
            data_capture_config=capture,
            shadow_variants=[] if shadow is None else [variant(shadow)],
            # Retaining the autoscaled instance counts must not keep old weights or capture settings.
            apply_on_update=[
                *(["DesiredWeight"] if config.variants is not None or shadow is not None else []),
                *(["DataCaptureConfig"] if capture is not None else []),
            ],
        )
        self.endpoint_arn = self.endpoint.ref
        self._let_roles_read_rollback_alarms(
            [m.role for m in (model, *models.values()) if m is not None],
            rollback_alarms if config.rollout.auto_rollback else [],
        )
        # Per production variant; `scaling` is the default variant's (None in an A/B test).
        self.variant_scaling: dict[str, ScalableInstanceCount] = {}
        for plan in plans:
            if plan.scaling is not None:
                self.variant_scaling[plan.name] = self._scale_variant(plan.name, plan.scaling)
        self.scaling: ScalableInstanceCount | None = self.variant_scaling.get(VARIANT_NAME)

    def _monitor_variants(
        self, monitoring: MonitoringConfig | None, alarm_topic: sns.ITopic | None
    ) -> tuple[EndpointMetrics, EndpointAlarms | None, dict[str, EndpointAlarms]]:
        """(metrics, alarms, alarms per production variant): the endpoint's own for the one default
        variant; otherwise the first variant's metrics and alarms on each production variant (none
        for the endpoint as a whole). A deployment rolls back on any production variant's rollback
        alarms. The shadow is not alarmed: callers never get its answers."""
        if self.variant_names == [VARIANT_NAME]:
            metrics, alarms = self._monitor("realtime", monitoring, alarm_topic, self.instance_types)
            return metrics, alarms, {} if alarms is None else {VARIANT_NAME: alarms}
        variant_alarms = {}
        if monitoring is not None and monitoring.enabled:
            for name in self.variant_names:
                variant_alarms[name] = EndpointAlarms(
                    self,
                    f"{name}Alarms",
                    metrics=EndpointMetrics(self.endpoint_name, name, "realtime"),
                    thresholds=monitoring.alarms,
                    topic=alarm_topic,
                )
        return EndpointMetrics(self.endpoint_name, self.variant_names[0], "realtime"), None, variant_alarms

    def _experiment_endpoint_name(self, plans: list[VariantPlan], instance_pools: list[str] | None) -> str:
        """One variant: `endpoint_name`'s rule. Several: the name ends in a hash of each autoscaled
        variant's instance type, so changing any of them makes a new endpoint, as it must."""
        autoscaled = [f"{plan.name}={plan.instance_type}" for plan in plans if plan.scaling is not None]
        if len(plans) == 1 or not autoscaled:
            return self._endpoint_name(
                instance_type=plans[0].instance_type,
                autoscaled=bool(autoscaled),
                instance_pools=instance_pools,
            )
        digest = hashlib.sha256(",".join(autoscaled).encode()).hexdigest()[:8]
        return endpoint_name(f"{self.name_prefix}-{digest}")

    def _scale_variant(self, variant_name: str, scaling: RealtimeScaling) -> ScalableInstanceCount:
        scalable = self.auto_scale_instance_count(
            min_capacity=scaling.min_capacity, max_capacity=scaling.max_capacity, variant_name=variant_name
        )
        scalable.scale_on_invocations(
            invocations_per_instance=scaling.target_invocations_per_instance,
            scale_in_cooldown=Duration.seconds(scaling.scale_in_cooldown_seconds),
            scale_out_cooldown=Duration.seconds(scaling.scale_out_cooldown_seconds),
        )
        return scalable

    def auto_scale_instance_count(
        self, *, min_capacity: int, max_capacity: int, variant_name: str = VARIANT_NAME
    ) -> ScalableInstanceCount:
        # The default variant keeps its original construct id, so its scaling resources keep theirs.
        construct_id = "InstanceCount" if variant_name == VARIANT_NAME else f"{variant_name}InstanceCount"
        return self._auto_scale(
            ScalableInstanceCount,
            construct_id,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
            variant_name=variant_name,
        )
