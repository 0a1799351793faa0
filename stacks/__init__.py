"""The app's stacks: one shared stack and one stack per enabled inference mode."""

from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Stack

from constructs import Construct
from sagemaker_constructs.settings import AppConfig

from .modes import AsyncStack, BatchStack, RealtimeStack, ServerlessStack
from .shared import SharedModelStack


@dataclass
class InferenceStacks:
    shared: SharedModelStack
    modes: dict[str, Stack] = field(default_factory=dict)


def build_stacks(scope: Construct, config: AppConfig, *, container_dir: Path) -> InferenceStacks:
    """Shared stack `<name>-Shared` plus `<name>-Realtime|Async|Serverless|Batch` for enabled modes."""
    shared = SharedModelStack(scope, f"{config.name}-Shared", config=config, container_dir=container_dir)
    common = {"registry": shared.registry, "role": shared.execution_role}
    monitored = {
        "monitoring": config.monitoring,
        "alarm_topic": shared.alarm_topic.topic if shared.alarm_topic is not None else None,
    }
    stacks = InferenceStacks(shared)
    if config.realtime.enabled:
        stacks.modes["realtime"] = RealtimeStack(
            scope,
            f"{config.name}-Realtime",
            config=config.realtime,
            store=shared.store,
            **common,
            **monitored,
        )
    if config.async_.enabled:
        stacks.modes["async"] = AsyncStack(
            scope, f"{config.name}-Async", config=config.async_, store=shared.store, **common, **monitored
        )
    if config.serverless.enabled:
        stacks.modes["serverless"] = ServerlessStack(
            scope, f"{config.name}-Serverless", config=config.serverless, **common, **monitored
        )
    if shared.dashboard is not None:
        # By the endpoints' literal names: the shared stack never depends on a mode stack.
        for title, key in (("Real-time", "realtime"), ("Async", "async"), ("Serverless", "serverless")):
            if key in stacks.modes:
                endpoint = stacks.modes[key].endpoint
                # A/B and shadow tests: a row per variant.
                variants = getattr(endpoint, "variant_metrics", {})
                if len(variants) > 1:
                    for variant, metrics in variants.items():
                        shared.dashboard.add_endpoint(f"{title} {variant}", metrics)
                else:
                    shared.dashboard.add_endpoint(title, endpoint.metrics)
    if config.batch.enabled:
        stacks.modes["batch"] = BatchStack(
            scope, f"{config.name}-Batch", config=config.batch, store=shared.store, **common
        )
    for stack in stacks.modes.values():
        # The model package ARN arrives through SSM, which CloudFormation cannot see as a dependency.
        stack.add_stack_dependency(shared, "deploys the registered model version from the shared stack")
    return stacks


__all__ = [
    "AsyncStack",
    "BatchStack",
    "InferenceStacks",
    "RealtimeStack",
    "ServerlessStack",
    "SharedModelStack",
    "build_stacks",
]
