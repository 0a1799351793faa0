"""The app's stacks: one shared stack and one stack per enabled inference mode."""

from dataclasses import dataclass, field
from pathlib import Path

import d2sm_contract as contract
from constructs import Construct
from sagemaker_constructs.settings import AppConfig

from .modes import (
    AsyncStack,
    BatchStack,
    EndpointStack,
    ModeStack,
    ModeStackProps,
    RealtimeStack,
    ServerlessStack,
)
from .shared import SharedModelStack


@dataclass
class InferenceStacks:
    shared: SharedModelStack
    modes: dict[str, ModeStack] = field(default_factory=dict)


def build_stacks(scope: Construct, config: AppConfig, *, container_dir: Path) -> InferenceStacks:
    """Shared stack `<name>-Shared` plus `<name>-Realtime|Async|Serverless|Batch` for enabled modes."""
    shared = SharedModelStack(
        scope, contract.stack_name(config.name, contract.SHARED), config=config, container_dir=container_dir
    )
    props = ModeStackProps(
        registry=shared.registry,
        role=shared.execution_role,
        store=shared.store,
        monitoring=config.monitoring,
        alarm_topic=shared.alarm_topic.topic if shared.alarm_topic is not None else None,
        cpu_runtime=config.model.cpu_runtime,
    )
    stacks = InferenceStacks(shared)
    endpoints: dict[str, EndpointStack] = {}
    if config.realtime.enabled:
        endpoints["realtime"] = RealtimeStack(
            scope, contract.stack_name(config.name, contract.REALTIME), props=props, config=config.realtime
        )
    if config.async_.enabled:
        endpoints["async"] = AsyncStack(
            scope, contract.stack_name(config.name, contract.ASYNC), props=props, config=config.async_
        )
    if config.serverless.enabled:
        endpoints["serverless"] = ServerlessStack(
            scope,
            contract.stack_name(config.name, contract.SERVERLESS),
            props=props,
            config=config.serverless,
        )
    stacks.modes.update(endpoints)
    if shared.dashboard is not None:
        # By the endpoints' literal names: the shared stack never depends on a mode stack.
        for title, key in (("Real-time", "realtime"), ("Async", "async"), ("Serverless", "serverless")):
            if key in endpoints:
                endpoint = endpoints[key].endpoint
                # A/B and shadow tests: a row per variant.
                variants = getattr(endpoint, "variant_metrics", {})
                if len(variants) > 1:
                    for variant, metrics in variants.items():
                        shared.dashboard.add_endpoint(f"{title} {variant}", metrics)
                else:
                    shared.dashboard.add_endpoint(title, endpoint.metrics)
    if config.batch.enabled:
        stacks.modes["batch"] = BatchStack(
            scope, contract.stack_name(config.name, contract.BATCH), props=props, config=config.batch
        )
    for stack in stacks.modes.values():
        # The model package ARN arrives through SSM, which CloudFormation cannot see as a dependency.
        stack.add_stack_dependency(shared, "deploys the registered model version from the shared stack")
    return stacks


__all__ = [
    "AsyncStack",
    "BatchStack",
    "EndpointStack",
    "InferenceStacks",
    "ModeStack",
    "ModeStackProps",
    "RealtimeStack",
    "ServerlessStack",
    "SharedModelStack",
    "build_stacks",
]
