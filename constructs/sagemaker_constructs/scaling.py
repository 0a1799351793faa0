"""Application Auto Scaling for SageMaker production variants, as domain-named policies."""

from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam

from constructs import Construct

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
# Application Auto Scaling creates this service-linked role on first use; a role of our own
# would need SageMaker permissions we would rather not hand out.
SERVICE_LINKED_ROLE = (
    "aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)


class ScalableVariantAttribute(Construct):
    """A variant attribute registered with Application Auto Scaling; subclasses add policies."""

    DIMENSION: str

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoint_name: str,
        variant_name: str,
        min_capacity: int,
        max_capacity: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.endpoint_name = endpoint_name
        self.target = _sagemaker_scalable_target(
            self,
            resource_id=f"endpoint/{endpoint_name}/variant/{variant_name}",
            dimension=self.DIMENSION,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
        )


def _sagemaker_scalable_target(
    scope: Construct, *, resource_id: str, dimension: str, min_capacity: int, max_capacity: int
) -> appscaling.ScalableTarget:
    role_arn = Stack.of(scope).format_arn(
        service="iam",
        region="",
        resource="role",
        resource_name=SERVICE_LINKED_ROLE,
        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
    )
    return appscaling.ScalableTarget(
        scope,
        "Target",
        service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
        resource_id=resource_id,
        scalable_dimension=dimension,
        min_capacity=min_capacity,
        max_capacity=max_capacity,
        role=iam.Role.from_role_arn(scope, "ServiceLinkedRole", role_arn),
    )


class ScalableInstanceCount(ScalableVariantAttribute):
    """Instance count of a real-time variant."""

    DIMENSION = "sagemaker:variant:DesiredInstanceCount"

    def scale_on_invocations(
        self, *, invocations_per_instance: int, scale_in_cooldown: Duration, scale_out_cooldown: Duration
    ) -> appscaling.TargetTrackingScalingPolicy:
        """Track SageMakerVariantInvocationsPerInstance (per minute). Not published for async endpoints."""
        return self.target.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )


@dataclass(frozen=True)
class BacklogScaling:
    tracking: appscaling.TargetTrackingScalingPolicy
    scale_out_from_zero: appscaling.StepScalingAction
    has_backlog_without_capacity: cloudwatch.Alarm


class ScalableAsyncInstanceCount(ScalableVariantAttribute):
    """Instance count of an async variant, which may scale to zero."""

    DIMENSION = "sagemaker:variant:DesiredInstanceCount"

    def _endpoint_metric(self, metric_name: str) -> cloudwatch.Metric:
        # Async endpoint metrics carry the EndpointName dimension only (no VariantName).
        return cloudwatch.Metric(
            namespace=SAGEMAKER_NAMESPACE,
            metric_name=metric_name,
            dimensions_map={"EndpointName": self.endpoint_name},
            statistic=cloudwatch.Stats.AVERAGE,
            period=Duration.minutes(1),
        )

    def scale_on_backlog(
        self,
        *,
        backlog_per_instance: int,
        scale_in_cooldown: Duration,
        scale_out_cooldown: Duration,
        cold_start: Duration,
    ) -> BacklogScaling:
        """Track ApproximateBacklogSizePerInstance, plus a step out of zero.

        Target tracking alone never leaves zero instances (its metric divides by the instance
        count), so a HasBacklogWithoutCapacity alarm drives a +1 step policy. Its cooldown is the
        larger of `scale_out_cooldown` and `cold_start`: the alarm stays in ALARM until the first
        instance serves, and a shorter cooldown would add another instance for the same backlog.
        """
        tracking = self.target.scale_to_track_metric(
            "BacklogPerInstance",
            target_value=backlog_per_instance,
            custom_metric=self._endpoint_metric("ApproximateBacklogSizePerInstance"),
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )
        scale_out_from_zero, alarm = _add_one_on_alarm(
            self,
            self.target,
            alarm_id="HasBacklogWithoutCapacity",
            # The metric is only published while there is a backlog.
            metric=self._endpoint_metric("HasBacklogWithoutCapacity"),
            aggregation=appscaling.MetricAggregationType.AVERAGE,
            cooldown=Duration.seconds(max(scale_out_cooldown.to_seconds(), cold_start.to_seconds())),
            description="Requests are queued but the async endpoint has no instance: add one.",
        )
        return BacklogScaling(tracking, scale_out_from_zero, alarm)


class ScalableProvisionedConcurrency(ScalableVariantAttribute):
    """Provisioned concurrency of a serverless variant."""

    DIMENSION = "sagemaker:variant:DesiredProvisionedConcurrency"

    def scale_on_utilization(self, *, target_utilization: float) -> appscaling.TargetTrackingScalingPolicy:
        return self.target.scale_to_track_metric(
            "ProvisionedConcurrencyUtilization",
            target_value=target_utilization,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_PROVISIONED_CONCURRENCY_UTILIZATION,
        )


@dataclass(frozen=True)
class ScaleOutFromZero:
    step: appscaling.StepScalingAction
    no_capacity_invocation_failures: cloudwatch.Alarm


class ScalableCopyCount(Construct):
    """Copy count of an inference component, which may scale to zero copies (and its endpoint to
    zero instances through managed instance scaling)."""

    DIMENSION = "sagemaker:inference-component:DesiredCopyCount"

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        inference_component_name: str,
        min_capacity: int,
        max_capacity: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.inference_component_name = inference_component_name
        self.target = _sagemaker_scalable_target(
            self,
            resource_id=f"inference-component/{inference_component_name}",
            dimension=self.DIMENSION,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
        )

    def scale_on_invocations_per_copy(
        self, *, invocations_per_copy: float, scale_in_cooldown: Duration, scale_out_cooldown: Duration
    ) -> appscaling.TargetTrackingScalingPolicy:
        """Track SageMakerInferenceComponentInvocationsPerCopy (per minute)."""
        return self.target.scale_to_track_metric(
            "InvocationsPerCopy",
            target_value=invocations_per_copy,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_INVOCATIONS_PER_COPY,
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )

    def scale_on_concurrent_requests_per_copy(
        self, *, requests_per_copy: float, scale_in_cooldown: Duration, scale_out_cooldown: Duration
    ) -> appscaling.TargetTrackingScalingPolicy:
        """Track SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution (10 s metrics)."""
        return self.target.scale_to_track_metric(
            "ConcurrentRequestsPerCopy",
            target_value=requests_per_copy,
            predefined_metric=(
                appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_CONCURRENT_REQUESTS_PER_COPY_HIGH_RESOLUTION
            ),
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )

    def scale_out_from_zero(self, *, cooldown: Duration) -> ScaleOutFromZero:
        """+1 copy when a call finds no copy to serve it.

        Target tracking cannot leave zero copies (its metric is per copy), so an alarm on
        NoCapacityInvocationFailures drives a step policy. The alarm fires on the first failed
        call (Sum >= 1 in a minute): GreaterThanThreshold 1, as in AWS's example, would ignore a
        single waiting caller (stdapi-ai/stdapi.ai#43). `cooldown` should cover a cold start, so
        the calls that keep failing while the first copy starts do not add more copies.
        """
        step, alarm = _add_one_on_alarm(
            self,
            self.target,
            alarm_id="NoCapacityInvocationFailures",
            # Published only when a call finds no copy.
            metric=cloudwatch.Metric(
                namespace=SAGEMAKER_NAMESPACE,
                metric_name="NoCapacityInvocationFailures",
                dimensions_map={"InferenceComponentName": self.inference_component_name},
                statistic=cloudwatch.Stats.SUM,
                period=Duration.minutes(1),
            ),
            aggregation=appscaling.MetricAggregationType.MAXIMUM,
            cooldown=cooldown,
            description="A call found no copy of the inference component to serve it: add one.",
        )
        return ScaleOutFromZero(step, alarm)


def _add_one_on_alarm(
    scope: Construct,
    target: appscaling.ScalableTarget,
    *,
    alarm_id: str,
    metric: cloudwatch.Metric,
    aggregation: appscaling.MetricAggregationType,
    cooldown: Duration,
    description: str,
) -> tuple[appscaling.StepScalingAction, cloudwatch.Alarm]:
    """The way out of zero: +1 capacity when `metric` is >= 1 in one period (missing = fine).

    A step policy (`ScaleOutFromZero`) rather than `StepScalingPolicy`, which wants two intervals
    and would add a scale-in alarm fighting target tracking.
    """
    step = appscaling.StepScalingAction(
        scope,
        "ScaleOutFromZero",
        scaling_target=target,
        adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
        metric_aggregation_type=aggregation,
        cooldown=cooldown,
    )
    step.add_adjustment(adjustment=1, lower_bound=0)
    alarm = cloudwatch.Alarm(
        scope,
        alarm_id,
        metric=metric,
        threshold=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=1,
        datapoints_to_alarm=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=description,
    )
    alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(step))
    return step, alarm
