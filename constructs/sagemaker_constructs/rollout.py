"""An endpoint's DeploymentConfig: blue/green traffic shifting, rolled back on alarms."""

from collections.abc import Sequence

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sagemaker as sagemaker

from .settings import CapacitySize, RolloutConfig

Deployment = sagemaker.CfnEndpoint


def blue_green_deployment(
    rollout: RolloutConfig, rollback_alarms: Sequence[cloudwatch.IAlarm]
) -> Deployment.DeploymentConfigProperty:
    """`rollout` as SageMaker's BlueGreenUpdatePolicy; auto-rollback on `rollback_alarms` if it asks.

    The alarms must watch the endpoint by name (not by a reference to the endpoint resource), or the
    endpoint and its alarms would depend on each other.
    """
    alarms = list(rollback_alarms) if rollout.auto_rollback else []
    return Deployment.DeploymentConfigProperty(
        blue_green_update_policy=Deployment.BlueGreenUpdatePolicyProperty(
            traffic_routing_configuration=Deployment.TrafficRoutingConfigProperty(
                type=rollout.traffic_routing,
                canary_size=_capacity(rollout.canary_size),
                linear_step_size=_capacity(rollout.linear_step_size),
                wait_interval_in_seconds=rollout.wait_interval_seconds,
            ),
            termination_wait_in_seconds=rollout.termination_wait_seconds,
            maximum_execution_timeout_in_seconds=rollout.maximum_execution_timeout_seconds,
        ),
        auto_rollback_configuration=Deployment.AutoRollbackConfigProperty(
            alarms=[Deployment.AlarmProperty(alarm_name=alarm.alarm_name) for alarm in alarms]
        )
        if alarms
        else None,
    )


def _capacity(size: CapacitySize | None) -> Deployment.CapacitySizeProperty | None:
    return None if size is None else Deployment.CapacitySizeProperty(type=size.type, value=size.value)
