"""Serverless inference: memory, concurrency, provisioned concurrency."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from .base import FieldProblems, Section, between, one_of
from .capture import refuse_data_capture_on_serverless
from .rollout import RolloutConfig
from .versions import ModelVersion, ModelVersionField

SERVERLESS_MEMORY_SIZES_MB = (1024, 2048, 3072, 4096, 5120, 6144)


class ProvisionedConcurrencyScaling(Section):
    """Target tracking on SageMakerVariantProvisionedConcurrencyUtilization."""

    max_capacity: Annotated[int, between(1, 200)] = 2
    target_utilization: Annotated[float, between(0.1, 1.0)] = 0.7


class ServerlessConfig(Section):
    enabled: bool = True
    model_version: ModelVersionField = ModelVersion()
    memory_size_mb: Annotated[int, one_of(SERVERLESS_MEMORY_SIZES_MB)] = 6144
    max_concurrency: Annotated[int, between(1, 200)] = 5
    provisioned_concurrency: Annotated[int, between(1, 200)] | None = None
    provisioned_concurrency_scaling: ProvisionedConcurrencyScaling | None = None
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_instance_type(cls, data: Any) -> Any:
        # People reach for a GPU here; say why there is no such knob instead of "extra field".
        if isinstance(data, dict) and "instance_type" in data:
            raise FieldProblems(
                [
                    (
                        "instance_type",
                        "serverless inference has no instance type and no GPU: it runs the cpu "
                        "image, sized by memory_size_mb "
                        f"({', '.join(map(str, SERVERLESS_MEMORY_SIZES_MB))}) "
                        f"(got {data['instance_type']!r})",
                    )
                ]
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_data_capture(cls, data: Any) -> Any:
        refuse_data_capture_on_serverless(data)
        return data

    @model_validator(mode="after")
    def _concurrency(self) -> ServerlessConfig:
        problems = []
        provisioned, scaling = self.provisioned_concurrency, self.provisioned_concurrency_scaling
        if provisioned is not None and provisioned > self.max_concurrency:
            problems.append(
                (
                    "provisioned_concurrency",
                    f"must not exceed max_concurrency ({self.max_concurrency}) (got {provisioned})",
                )
            )
        if scaling is not None and provisioned is None:
            problems.append(
                ("provisioned_concurrency_scaling", "needs provisioned_concurrency, the scaling minimum")
            )
        elif (
            scaling is not None
            and provisioned is not None
            and not provisioned <= scaling.max_capacity <= self.max_concurrency
        ):
            problems.append(
                (
                    "provisioned_concurrency_scaling.max_capacity",
                    f"must be between provisioned_concurrency ({provisioned}) and max_concurrency "
                    f"({self.max_concurrency}) (got {scaling.max_capacity})",
                )
            )
        if self.rollout.traffic_routing != "ALL_AT_ONCE":
            problems.append(
                (
                    "rollout.traffic_routing",
                    "must be ALL_AT_ONCE for a serverless endpoint: it has no instances to shift in "
                    f"parts (got {self.rollout.traffic_routing!r})",
                )
            )
        if problems:
            raise FieldProblems(problems)
        return self
