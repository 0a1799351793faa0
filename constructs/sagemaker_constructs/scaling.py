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
        role_arn = Stack.of(self).format_arn(
            service="iam",
            region="",
            resource="role",
            resource_name=SERVICE_LINKED_ROLE,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        self.target = appscaling.ScalableTarget(
            self,
            "Target",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{endpoint_name}/variant/{variant_name}",
            scalable_dimension=self.DIMENSION,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
            role=iam.Role.from_role_arn(self, "ServiceLinkedRole", role_arn),
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
        scale_out_from_zero = appscaling.StepScalingAction(
            self,
            "ScaleOutFromZero",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            metric_aggregation_type=appscaling.MetricAggregationType.AVERAGE,
            cooldown=Duration.seconds(max(scale_out_cooldown.to_seconds(), cold_start.to_seconds())),
        )
        scale_out_from_zero.add_adjustment(adjustment=1, lower_bound=0)
        alarm = cloudwatch.Alarm(
            self,
            "HasBacklogWithoutCapacity",
            metric=self._endpoint_metric("HasBacklogWithoutCapacity"),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            # The metric is only published while there is a backlog.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Requests are queued but the async endpoint has no instance: add one.",
        )
        alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(scale_out_from_zero))
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
