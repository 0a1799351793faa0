"""Real-time endpoint whose model runs as an inference component: scales to zero copies and zero
instances when idle, and back from zero on the first call that finds no copy."""

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns

from constructs import Construct

from .endpoint import VARIANT_NAME, InferenceEndpoint, ami_version, endpoint_name, instance_pools
from .packaged_model import PackagedModel
from .scaling import ScalableCopyCount
from .settings import MonitoringConfig, RealtimeConfig, RolloutConfig

# The copy count the component is created with. SageMaker refuses 0 at creation, so the first
# deploy starts one copy (and one instance); the autoscaler owns the count from then on.
INITIAL_COPY_COUNT = 1
# AWS documents rolling updates (MaximumBatchSize 5-50 % of the copy count) for components that run
# several copies; below this many, an update is left to SageMaker's default, without a batch policy.
MIN_COPIES_FOR_ROLLING_UPDATE = 2


def inference_component_name(name_prefix: str) -> str:
    """`<prefix>-component` in lower case, at most 63 characters: a literal, so the component, its
    scalable target, its alarms' dimension and the stack output spell it identically, and in lower
    case, as SageMaker writes it in ARNs and CloudWatch (whose dimensions are case-sensitive)."""
    return endpoint_name(f"{name_prefix}-component").lower()


class InferenceComponentEndpoint(InferenceEndpoint):
    """Endpoint config with `ExecutionRoleArn`, managed instance scaling (min 0) and routing, and a
    variant without a model; the model is placed on it as an `AWS::SageMaker::InferenceComponent`.

    The component's `RuntimeConfig.CopyCount` is always `INITIAL_COPY_COUNT`, whatever the
    configuration says: it is what CloudFormation creates the component with, and, being the same
    in every template, it is never a property change on a later deploy, so a new model version or
    compute requirement updates the component without setting its copy count back. Scaling bounds
    live on the scalable target only. Callers name the component: `InvokeEndpoint(EndpointName=...,
    InferenceComponentName=...)`.

    A new model version rolls one copy at a time, with rollback on the component's alarms, only when
    scaling keeps at least `MIN_COPIES_FOR_ROLLING_UPDATE` copies; with fewer, SageMaker updates the
    component its own way (no DeploymentConfig), which `d2sm verify` checks after the deploy.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel,
        config: RealtimeConfig,
        role: iam.IRole,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        components = config.inference_components
        if components is None:
            raise ValueError("config.inference_components must be set for an inference-component endpoint")
        # Copies, not the variant, are registered with Application Auto Scaling: the name need not
        # change with the instance type.
        self.endpoint_name = self._endpoint_name(instance_type=config.instance_type, autoscaled=False)
        self.inference_component_name = inference_component_name(self.name_prefix)
        # The component's metrics and alarms (SageMaker publishes them by InferenceComponentName).
        # The endpoint gets no DeploymentConfig: a new model version updates the component.
        self.instance_types = config.instance_types
        self.metrics, self.alarms = self._monitor(
            "realtime",
            monitoring,
            alarm_topic,
            self.instance_types,
            inference_component_name=self.inference_component_name,
        )
        pooled = config.instance_pools is not None
        self.endpoint_config, self.endpoint = self._create_endpoint(
            [
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    # Pools are all GPU or all CPU here (validated): the one model serves them all.
                    instance_type=None if pooled else config.instance_type,
                    instance_pools=instance_pools(config.instance_types, model) if pooled else None,
                    variant_instance_provision_timeout_in_seconds=config.provision_timeout,
                    initial_instance_count=config.initial_instance_count,
                    inference_ami_version=ami_version(config, config.instance_types),
                    managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                        status="ENABLED",
                        min_instance_count=0,
                        max_instance_count=components.max_instance_count,
                    ),
                    routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                        routing_strategy=components.routing_strategy
                    ),
                )
            ],
            # Managed instance scaling owns the instance count: an endpoint update keeps it.
            autoscaled=True,
            # An endpoint that hosts inference components needs a role of its own.
            execution_role_arn=role.role_arn,
            # As the instance-based Models are: the container needs no network.
            enable_network_isolation=True,
        )
        self.endpoint_arn = self.endpoint.ref
        resources = sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
            number_of_accelerator_devices_required=components.accelerators or None,
            number_of_cpu_cores_required=components.cpu_cores,
            min_memory_required_in_mb=components.memory_mb,
        )
        rolling = (
            components.scaling is not None and components.scaling.min_copies >= MIN_COPIES_FOR_ROLLING_UPDATE
        )
        self.component = sagemaker.CfnInferenceComponent(
            self,
            "Component",
            inference_component_name=self.inference_component_name,
            # The attribute, not the fixed name: the component waits for the endpoint.
            endpoint_name=self.endpoint.attr_endpoint_name,
            variant_name=VARIANT_NAME,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=model.model_name,
                compute_resource_requirements=resources,
                startup_parameters=sagemaker.CfnInferenceComponent.InferenceComponentStartupParametersProperty(
                    container_startup_health_check_timeout_in_seconds=(
                        config.container_startup_health_check_timeout_seconds
                    ),
                    model_data_download_timeout_in_seconds=config.model_data_download_timeout_seconds,
                ),
            ),
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=INITIAL_COPY_COUNT
            ),
            deployment_config=self._rolling_update(config.rollout) if rolling else None,
        )
        self.inference_component_arn = self.component.attr_inference_component_arn
        rollback_policy = self._let_roles_read_rollback_alarms(
            [role, model.role], self._rollback_alarms(config.rollout) if rolling else []
        )
        if rollback_policy is not None:
            self.component.node.add_dependency(rollback_policy)
        self.scaling: ScalableCopyCount | None = None
        scaling = components.scaling
        if scaling is not None:
            self.scaling = self.auto_scale_copy_count(
                min_capacity=scaling.min_copies, max_capacity=scaling.max_copies
            )
            cooldowns = {
                "scale_in_cooldown": Duration.seconds(scaling.scale_in_cooldown_seconds),
                "scale_out_cooldown": Duration.seconds(scaling.scale_out_cooldown_seconds),
            }
            if scaling.metric == "invocations_per_copy":
                self.scaling.scale_on_invocations_per_copy(invocations_per_copy=scaling.target, **cooldowns)
            else:
                self.scaling.scale_on_concurrent_requests_per_copy(
                    requests_per_copy=scaling.target, **cooldowns
                )
            if scaling.min_copies == 0:
                self.scaling.scale_out_from_zero(cooldown=Duration.seconds(components.cold_start_seconds))

    def _rolling_update(
        self, rollout: RolloutConfig
    ) -> sagemaker.CfnInferenceComponent.InferenceComponentDeploymentConfigProperty:
        """A specification update (new model version) replaces one copy at a time, waits
        `rollout.wait_interval_seconds` after each, and rolls back on the endpoint's rollback alarms
        when `rollout.auto_rollback` (they watch the endpoint by name: no dependency cycle)."""
        component = sagemaker.CfnInferenceComponent
        alarms = self.alarms.rollback if rollout.auto_rollback and self.alarms is not None else []
        return component.InferenceComponentDeploymentConfigProperty(
            rolling_update_policy=component.InferenceComponentRollingUpdatePolicyProperty(
                maximum_batch_size=component.InferenceComponentCapacitySizeProperty(
                    type="COPY_COUNT", value=1
                ),
                wait_interval_in_seconds=rollout.wait_interval_seconds,
                maximum_execution_timeout_in_seconds=rollout.maximum_execution_timeout_seconds,
            ),
            auto_rollback_configuration=component.AutoRollbackConfigurationProperty(
                alarms=[component.AlarmProperty(alarm_name=alarm.alarm_name) for alarm in alarms]
            )
            if alarms
            else None,
        )

    def auto_scale_copy_count(self, *, min_capacity: int, max_capacity: int) -> ScalableCopyCount:
        scalable = ScalableCopyCount(
            self,
            "CopyCount",
            inference_component_name=self.inference_component_name,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
        )
        # By its literal name: registering must wait for the component it names.
        scalable.node.add_dependency(self.component)
        return scalable

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """InvokeEndpoint on the endpoint and on the component the call names."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:InvokeEndpoint"],
            resource_arns=[self.endpoint_arn, self.inference_component_arn],
        )
