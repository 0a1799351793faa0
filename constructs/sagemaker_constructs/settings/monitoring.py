"""Alarms for every deployed endpoint, where they notify, and the thresholds they use."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from .base import EmailAddress, FieldProblems, Section, between


class LatencyThresholds(Section):
    """ModelLatency p99 (milliseconds) per mode: GPU instances answer in well under a second, the
    serverless CPU image in seconds; async work may queue behind long requests."""

    realtime: Annotated[int, between(1, 3_600_000)] = 3000
    async_: Annotated[int, between(1, 3_600_000)] = Field(default=30_000, alias="async")
    serverless: Annotated[int, between(1, 3_600_000)] = 20_000


class AlarmThresholds(Section):
    # Per minute (Sum). 5XX errors, model errors and latency also roll a deployment back.
    invocation_5xx_errors: Annotated[int, between(1, 100_000)] = 5
    invocation_4xx_errors: Annotated[int, between(1, 100_000)] = 50
    # InvocationModelErrors (real-time, serverless) / InvocationFailures (async).
    model_errors: Annotated[int, between(1, 100_000)] = 5
    model_latency_p99_ms: LatencyThresholds = Field(default_factory=LatencyThresholds)
    # Instance-based variants: average over the fleet.
    memory_utilization_percent: Annotated[int, between(1, 100)] = 90
    # Async queue.
    async_backlog: Annotated[int, between(1, 1_000_000)] = 100
    async_oldest_request_age_seconds: Annotated[int, between(60, 86_400)] = 1800
    # An alarm fires when `datapoints_to_alarm` of the last `evaluation_minutes` minutes breach.
    evaluation_minutes: Annotated[int, between(1, 60)] = 3
    datapoints_to_alarm: Annotated[int, between(1, 60)] = 2

    @model_validator(mode="after")
    def _window(self) -> AlarmThresholds:
        if self.datapoints_to_alarm > self.evaluation_minutes:
            raise FieldProblems(
                [
                    (
                        "datapoints_to_alarm",
                        f"must be at most evaluation_minutes ({self.evaluation_minutes}) "
                        f"(got {self.datapoints_to_alarm})",
                    )
                ]
            )
        return self


class MonitoringConfig(Section):
    enabled: bool = True
    # Subscribed to the alarm topic (it confirms by e-mail); null: no subscription.
    email: EmailAddress | None = None
    alarms: AlarmThresholds = Field(default_factory=AlarmThresholds)
