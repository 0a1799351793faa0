"""How an endpoint update shifts traffic: SageMaker's blue/green deployment guardrails.

Every endpoint update is a blue/green deployment: SageMaker starts a new (green) fleet, shifts traffic
to it (all at once, a canary then the rest, or linear steps), watches the rollback alarms for
`wait_interval_seconds` after each step (the baking period) and rolls all traffic back to the old
(blue) fleet if one of them goes into ALARM. Limits as SageMaker documents them
(TrafficRoutingConfig, BlueGreenUpdatePolicy, "Deployment guardrails: exclusions").
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import model_validator

from .base import FieldProblems, Section, between

TrafficRouting = Literal["ALL_AT_ONCE", "CANARY", "LINEAR"]
# A canary (or a linear step) is a part of the variant's fleet, as SageMaker counts it.
MIN_STEPPED_INSTANCES = 2


class CapacitySize(Section):
    type: Literal["INSTANCE_COUNT", "CAPACITY_PERCENT"]
    value: Annotated[int, between(1, 100)]


class RolloutConfig(Section):
    traffic_routing: TrafficRouting = "ALL_AT_ONCE"
    # CANARY only: at most 50% of the fleet.
    canary_size: CapacitySize | None = None
    # LINEAR only: 10-50% of the fleet per step.
    linear_step_size: CapacitySize | None = None
    # The baking period after each traffic step, while the rollback alarms are watched.
    wait_interval_seconds: Annotated[int, between(0, 3600)] = 300
    # Keep the old fleet this long after the last step (instant rollback by hand, at the fleet's cost).
    termination_wait_seconds: Annotated[int, between(0, 3600)] = 0
    # null: SageMaker's default.
    maximum_execution_timeout_seconds: Annotated[int, between(600, 28800)] | None = None
    # Roll back when an alarm this app creates for the endpoint (see monitoring) goes into ALARM.
    auto_rollback: bool = True

    @model_validator(mode="after")
    def _sizes(self) -> RolloutConfig:
        problems = []
        needed = {"CANARY": "canary_size", "LINEAR": "linear_step_size"}
        for routing, field in needed.items():
            size = getattr(self, field)
            if self.traffic_routing == routing and size is None:
                problems.append((field, f"is required with traffic_routing {routing}"))
            elif self.traffic_routing != routing and size is not None:
                problems.append(
                    (field, f"applies to traffic_routing {routing} only (got {self.traffic_routing})")
                )
        canary, step = _percent(self.canary_size), _percent(self.linear_step_size)
        if self.traffic_routing == "CANARY" and canary not in (None, *range(1, 51)):
            problems.append(("canary_size.value", f"must be at most 50 percent (got {canary})"))
        if self.traffic_routing == "LINEAR" and step not in (None, *range(10, 51)):
            problems.append(("linear_step_size.value", f"must be 10-50 percent (got {step})"))
        if problems:
            raise FieldProblems(problems)
        return self

    def traffic_steps(self, most_instances: int) -> int:
        """How many times traffic moves (each followed by a baking period)."""
        if self.traffic_routing == "CANARY":
            return 2
        size = self.linear_step_size
        if self.traffic_routing == "LINEAR" and size is not None:  # required with LINEAR (validated)
            share = (
                size.value / 100 if size.type == "CAPACITY_PERCENT" else size.value / max(most_instances, 1)
            )
            return math.ceil(1 / share)
        return 1

    def total_wait_seconds(self, most_instances: int) -> int:
        return self.traffic_steps(most_instances) * self.wait_interval_seconds + self.termination_wait_seconds


def _percent(size: CapacitySize | None) -> int | None:
    return size.value if size is not None and size.type == "CAPACITY_PERCENT" else None


def rollout_problems(
    rollout: RolloutConfig, *, fewest: int, most: int, counted_by: str
) -> list[tuple[str, str]]:
    """Problems of `rollout` on a variant that runs between `fewest` and `most` instances.

    `counted_by` names the field those counts come from, for the messages. Paths are relative to
    the mode (`rollout.…`).
    """
    problems = []
    routing = rollout.traffic_routing
    if routing != "ALL_AT_ONCE" and fewest < MIN_STEPPED_INSTANCES:
        problems.append(
            (
                "rollout.traffic_routing",
                f"{routing} shifts traffic in parts of the fleet and needs at least "
                f"{MIN_STEPPED_INSTANCES} instances at all times; this variant may run {fewest} "
                f"({counted_by}): use ALL_AT_ONCE or raise {counted_by} (got {routing!r})",
            )
        )
    elif (
        routing == "CANARY"
        and (canary := rollout.canary_size) is not None
        and canary.type == "INSTANCE_COUNT"
    ):
        if canary.value > fewest // 2:
            problems.append(
                (
                    "rollout.canary_size.value",
                    f"must be at most half the fewest instances the variant runs ({fewest}, "
                    f"{counted_by}): at most {fewest // 2} (got {canary.value})",
                )
            )
    elif (
        routing == "LINEAR"
        and (step := rollout.linear_step_size) is not None
        and step.type == "INSTANCE_COUNT"
    ):
        low, high = math.ceil(most / 10), fewest // 2
        if not low <= step.value <= high:
            problems.append(
                (
                    "rollout.linear_step_size.value",
                    f"must be 10-50% of the variant's instances ({fewest}-{most}, {counted_by}): "
                    f"between {low} and {high} (got {step.value})",
                )
            )
    timeout = rollout.maximum_execution_timeout_seconds
    if timeout is not None and not problems and timeout <= rollout.total_wait_seconds(most):
        problems.append(
            (
                "rollout.maximum_execution_timeout_seconds",
                f"must be more than the deployment's waiting time, {rollout.traffic_steps(most)} "
                f"traffic step(s) x wait_interval_seconds ({rollout.wait_interval_seconds}) + "
                f"termination_wait_seconds ({rollout.termination_wait_seconds}) = "
                f"{rollout.total_wait_seconds(most)} (got {timeout})",
            )
        )
    return problems
