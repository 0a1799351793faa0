"""What every SageMaker endpoint construct shares: one variant, config + endpoint, invoke grant."""

import hashlib
import re
from collections.abc import Sequence
from typing import TypeVar

from aws_cdk import CfnDeletionPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns

from constructs import Construct

from .instance_types import INSTANCE_TYPE_PATTERN, is_gpu
from .monitoring import EndpointAlarms, EndpointKind, EndpointMetrics
from .packaged_model import PackagedModel
from .registry import ModelRegistry
from .rollout import blue_green_deployment
from .scaling import ScalableVariantAttribute
from .settings import InstanceModeConfig, MonitoringConfig, RolloutConfig
from .settings.experiments import DEFAULT_VARIANT_NAME

ScalableT = TypeVar("ScalableT", bound=ScalableVariantAttribute)

# Stable across updates: blue/green deployments need the same variant name in the old and the new
# endpoint config, and scaling targets and metrics keep pointing at the same variant.
VARIANT_NAME = DEFAULT_VARIANT_NAME
MAX_ENDPOINT_NAME_LENGTH = 63


def endpoint_name(
    prefix: str, instance_type: str | None = None, instance_pools: Sequence[str] | None = None
) -> str:
    """`<prefix>[-<family>-<size>[-<pools hash>]]`, e.g. `Detectron2-Realtime-g5-xlarge`, at most
    63 characters.

    An autoscaled variant's endpoint carries its instance type in its name: SageMaker refuses to
    change the instance type of a variant registered with Application Auto Scaling, so a new type
    means a new endpoint (CloudFormation creates it, moves the scalable target, then deletes the old
    one). A variant on `instance_pools` is named after its priority-1 type plus a hash of the whole
    ordered list, so any change of the pools (a type added, removed or reordered) is a new endpoint
    as well. Too long a name keeps its start and ends in a hash of the whole.
    """
    name = prefix
    if instance_pools is not None:
        instance_type = instance_pools[0]
    if instance_type is not None:
        match = INSTANCE_TYPE_PATTERN.match(instance_type)
        if match is None:
            raise ValueError(f"not a SageMaker instance type: {instance_type!r}")
        family, size = match.groups()
        name = f"{prefix}-{family}-{size}"
    if instance_pools is not None:
        name += "-" + hashlib.sha256(",".join(instance_pools).encode()).hexdigest()[:8]
    name = re.sub(r"[^a-zA-Z0-9]+", "-", name).strip("-")
    if len(name) > MAX_ENDPOINT_NAME_LENGTH:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_ENDPOINT_NAME_LENGTH - 9].rstrip('-')}-{digest}"
    return name


def instance_pools(
    instance_types: Sequence[str], model: PackagedModel, pool_models: Sequence[PackagedModel] = ()
) -> list[sagemaker.CfnEndpointConfig.InstancePoolProperty]:
    """`InstancePools`, priority 1 first. A pool whose type runs another specification than
    `model` (a CPU type behind a GPU model, or the reverse) names the model of `pool_models` that
    runs it (`ModelNameOverride`)."""
    by_specification = {candidate.specification: candidate for candidate in pool_models}
    pools = []
    for priority, instance_type in enumerate(instance_types, start=1):
        specification = ModelRegistry.specification_for(instance_type)
        override = None
        if specification != model.specification:
            if specification not in by_specification:
                raise ValueError(
                    f"{instance_type} runs the {specification or 'primary (GPU)'} specification: "
                    "pass a model for it in pool_models"
                )
            override = by_specification[specification].model_name
        pools.append(
            sagemaker.CfnEndpointConfig.InstancePoolProperty(
                instance_type=instance_type, priority=priority, model_name_override=override
            )
        )
    return pools


def instance_variant(
    model: PackagedModel,
    mode: InstanceModeConfig,
    *,
    instance_type: str | None = None,
    initial_instance_count: int | None = None,
    variant_name: str = VARIANT_NAME,
    initial_variant_weight: float = 1,
    pool_models: Sequence[PackagedModel] = (),
) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
    """A variant on instances, with the mode's AMI and timeouts; the instance type and count are the
    mode's unless given (an experiment's variants choose their own). On the mode's
    `instance_pools` (when no `instance_type` is given) the variant has `InstancePools` and the
    provisioning timeout instead of `InstanceType`; `pool_models` serve the pools of the other
    specification."""
    pooled = instance_type is None and mode.instance_pools is not None
    instance_types = mode.instance_types if pooled else (instance_type or mode.instance_type,)
    if initial_instance_count is None:
        initial_instance_count = mode.initial_instance_count
    return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
        variant_name=variant_name,
        model_name=model.model_name,
        instance_type=None if pooled else instance_types[0],
        instance_pools=instance_pools(instance_types, model, pool_models) if pooled else None,
        variant_instance_provision_timeout_in_seconds=mode.provision_timeout if pooled else None,
        initial_instance_count=initial_instance_count,
        initial_variant_weight=initial_variant_weight,
        inference_ami_version=ami_version(mode, instance_types),
        container_startup_health_check_timeout_in_seconds=mode.container_startup_health_check_timeout_seconds,
        model_data_download_timeout_in_seconds=mode.model_data_download_timeout_seconds,
    )


def ami_version(mode: InstanceModeConfig, instance_types: Sequence[str]) -> str | None:
    """The GPU image needs a newer NVIDIA driver than the default AMI's, so a variant with any GPU
    type gets the mode's `inference_ami_version`; an all-CPU variant takes the default. The AMI is
    one value per variant: in a GPU-then-CPU pool list the CPU pools get it too (docs/instance-pools.md)."""
    return mode.inference_ami_version if any(is_gpu(t) for t in instance_types) else None


class InferenceEndpoint(Construct):
    """Base: a subclass's `__init__` names the endpoint (`_endpoint_name`), monitors it (`_monitor`),
    builds its variant and creates config and endpoint (`_create_endpoint`), assigning what each
    helper returns: every attribute below exists once the subclass's `__init__` returns, and no
    helper sets one as a side effect.

    The endpoint config has no physical name: configs are immutable, so every change replaces the
    config, which CloudFormation can only do under a generated name. The endpoint has one
    (`endpoint_name()`, from `name_prefix`, by default the stack name): its rollback alarms watch
    metrics by endpoint name while the endpoint names the alarms, which a generated name would turn
    into a dependency cycle. Its name changes exactly when it must be replaced (see `endpoint_name`).
    No volume KmsKeyId: the GPU instances' NVMe instance storage rejects it (AWS encrypts it).
    A replaced config is retained (`UpdateReplacePolicy: Retain`), as the Models are: after a silent
    SageMaker rollback the endpoint still runs it.
    """

    variant_name = VARIANT_NAME
    #: The endpoint's physical name (alarms, scaling and callers use it).
    endpoint_name: str
    endpoint_config: sagemaker.CfnEndpointConfig
    endpoint: sagemaker.CfnEndpoint
    endpoint_arn: str
    #: Its metrics (by endpoint name, or by component name), and its alarms when monitoring is on.
    metrics: EndpointMetrics
    alarms: EndpointAlarms | None

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str | None = None) -> None:
        super().__init__(scope, construct_id)
        self.name_prefix = name_prefix or Stack.of(self).stack_name

    def _endpoint_name(
        self, *, instance_type: str | None, autoscaled: bool, instance_pools: Sequence[str] | None = None
    ) -> str:
        """The endpoint's name, fixed before anything (alarms, rollout) refers to it."""
        if not autoscaled:
            instance_type = instance_pools = None
        return endpoint_name(self.name_prefix, instance_type, instance_pools)

    def _monitor(
        self,
        kind: EndpointKind,
        monitoring: MonitoringConfig | None,
        alarm_topic: sns.ITopic | None,
        instance_types: Sequence[str] = (),
        inference_component_name: str | None = None,
    ) -> tuple[EndpointMetrics, EndpointAlarms | None]:
        """Metrics (by the endpoint's name, or the component's) and, with `monitoring` enabled, the
        endpoint's alarms. More than one of `instance_types` (instance pools): the dashboard also shows
        each type."""
        pools = tuple(instance_types) if len(instance_types) > 1 else ()
        metrics = EndpointMetrics(
            self.endpoint_name,
            self.variant_name,
            kind,
            inference_component_name=inference_component_name,
            instance_types=pools,
        )
        alarms = None
        if monitoring is not None and monitoring.enabled:
            alarms = EndpointAlarms(
                self, "Alarms", metrics=metrics, thresholds=monitoring.alarms, topic=alarm_topic
            )
        return metrics, alarms

    def _deployment(self, rollout: RolloutConfig) -> sagemaker.CfnEndpoint.DeploymentConfigProperty:
        """Blue/green as configured, rolling back on this endpoint's rollback alarms (if monitored)."""
        return blue_green_deployment(rollout, self.alarms.rollback if self.alarms is not None else [])

    def _rollback_alarms(self, rollout: RolloutConfig) -> list[cloudwatch.IAlarm]:
        """The alarms a deployment rolls back on: none unless monitored and `rollout.auto_rollback`."""
        return list(self.alarms.rollback) if rollout.auto_rollback and self.alarms is not None else []

    def _create_endpoint(
        self,
        variants: Sequence[sagemaker.CfnEndpointConfig.ProductionVariantProperty],
        *,
        autoscaled: bool,
        async_inference_config: sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty | None = None,
        deployment_config: sagemaker.CfnEndpoint.DeploymentConfigProperty | None = None,
        data_capture_config: sagemaker.CfnEndpointConfig.DataCaptureConfigProperty | None = None,
        shadow_variants: Sequence[sagemaker.CfnEndpointConfig.ProductionVariantProperty] = (),
        execution_role_arn: str | None = None,
        enable_network_isolation: bool | None = None,
        apply_on_update: Sequence[str] = (),
    ) -> tuple[sagemaker.CfnEndpointConfig, sagemaker.CfnEndpoint]:
        """The endpoint config and the endpoint (named `endpoint_name`) that deploys it.

        `apply_on_update`: variant properties (`DesiredWeight`, `DataCaptureConfig`) an update
        takes from the new config even though `autoscaled` retains the others (the instance count)."""
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=list(variants),
            shadow_production_variants=list(shadow_variants) or None,
            async_inference_config=async_inference_config,
            data_capture_config=data_capture_config,
            execution_role_arn=execution_role_arn,
            enable_network_isolation=enable_network_isolation,
        )
        # Deleting the stack deletes it; replacing it keeps the old one (stated both ways, cfn-lint W3011).
        endpoint_config.cfn_options.deletion_policy = CfnDeletionPolicy.DELETE
        endpoint_config.cfn_options.update_replace_policy = CfnDeletionPolicy.RETAIN
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
            deployment_config=deployment_config,
            # An update would otherwise reset an autoscaled instance count to the initial count.
            retain_all_variant_properties=True if autoscaled else None,
            exclude_retained_variant_properties=[
                sagemaker.CfnEndpoint.VariantPropertyProperty(variant_property_type=name)
                for name in apply_on_update
            ]
            if autoscaled and apply_on_update
            else None,
        )
        return endpoint_config, endpoint

    def _let_roles_read_rollback_alarms(
        self, roles: Sequence[iam.IRole], alarms: Sequence[cloudwatch.IAlarm]
    ) -> iam.Policy | None:
        """SageMaker reads the rollback alarms with the endpoint's execution role (the models' role)
        during a deployment: `cloudwatch:DescribeAlarms` on exactly those alarms, granted before the
        endpoint is created or updated."""
        if not alarms:
            return None
        policy = iam.Policy(
            self,
            "RollbackAlarmsReadable",
            roles=list({id(role): role for role in roles}.values()),
            statements=[
                iam.PolicyStatement(
                    actions=["cloudwatch:DescribeAlarms"], resources=[alarm.alarm_arn for alarm in alarms]
                )
            ],
        )
        self.endpoint.node.add_dependency(policy)
        return policy

    def _auto_scale(
        self,
        attribute: type[ScalableT],
        construct_id: str,
        *,
        min_capacity: int,
        max_capacity: int,
        variant_name: str | None = None,
    ) -> ScalableT:
        scalable = attribute(
            self,
            construct_id,
            # The literal name, so a diff shows the target move to a new endpoint (a replacement) ...
            endpoint_name=self.endpoint_name,
            variant_name=variant_name or self.variant_name,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
        )
        # ... and registering waits for the endpoint it names.
        scalable.node.add_dependency(self.endpoint)
        return scalable

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=[self.endpoint_arn]
        )
