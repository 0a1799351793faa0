"""Instance-based endpoint modes (real-time, async) and their autoscaling."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..instance_types import is_burstable
from .base import FieldProblems, InstanceType, Seconds, Section, between
from .rollout import RolloutConfig, rollout_problems
from .versions import ModelVersion, ModelVersionField


class _Scaling(Section):
    # Bounds and defaults per mode in the subclasses.
    min_capacity: int
    max_capacity: int
    scale_in_cooldown_seconds: Seconds = 300
    scale_out_cooldown_seconds: Seconds = 60

    @model_validator(mode="after")
    def _ordered(self) -> _Scaling:
        if self.min_capacity > self.max_capacity:
            raise FieldProblems(
                [
                    (
                        "max_capacity",
                        f"must be at least min_capacity ({self.min_capacity}) (got {self.max_capacity})",
                    )
                ]
            )
        return self


class RealtimeScaling(_Scaling):
    """Target tracking on SageMakerVariantInvocationsPerInstance (invocations per instance per minute)."""

    min_capacity: int = 1
    max_capacity: Annotated[int, between(1, 100)] = 2
    target_invocations_per_instance: Annotated[int, between(1, 100_000)] = 100

    @field_validator("min_capacity")
    @classmethod
    def _never_zero(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                "must be at least 1 for a real-time endpoint: only async endpoints (or real-time "
                f"inference components) can scale to zero (got {value})"
            )
        if value > 100:
            raise ValueError(f"must be between 1 and 100 (got {value})")
        return value


class AsyncScaling(_Scaling):
    """Scale on the backlog; MinCapacity 0 scales back up through the HasBacklogWithoutCapacity alarm."""

    min_capacity: Annotated[int, between(0, 100)] = 0
    max_capacity: Annotated[int, between(1, 100)] = 2
    target_backlog_per_instance: Annotated[int, between(1, 1000)] = 5
    # How long a new instance takes to serve (GPU host, image pull, model load): the cooldown of the
    # step out of zero, so one backlog that outlasts a start does not add a second instance.
    cold_start_seconds: Annotated[int, between(60, 3600)] = 600


class AsyncObjectExpiry(Section):
    """Days after which S3 expires async requests, results and failures (null: keep them)."""

    input: Annotated[int, between(1, 3650)] | None = 7
    output: Annotated[int, between(1, 3650)] | None = 30
    failure: Annotated[int, between(1, 3650)] | None = 30


class _InstanceMode(Section):
    enabled: bool = True
    model_version: ModelVersionField = ModelVersion()
    instance_type: InstanceType = "ml.g5.xlarge"
    initial_instance_count: Annotated[int, between(1, 100)] = 1
    # GPU variants only. The default AMI of ml.g4dn/g5/p4d has NVIDIA driver 470, too old for the
    # CUDA 13 image even with its forward-compatibility libraries. al2023 ...-gpu-4-1 has driver 580,
    # which runs CUDA 13 natively; the al2 AMIs (550, 535) run it through those libraries (bin/serve).
    inference_ami_version: Literal[
        "al2023-ami-sagemaker-inference-gpu-4-1",
        "al2-ami-sagemaker-inference-gpu-3-1",
        "al2-ami-sagemaker-inference-gpu-2-1",
    ] = "al2023-ami-sagemaker-inference-gpu-4-1"
    # Sized for the multi-GB CUDA image and model: pull, extract, load and warm up take minutes.
    container_startup_health_check_timeout_seconds: Annotated[int, between(60, 3600)] = 900
    model_data_download_timeout_seconds: Annotated[int, between(60, 3600)] = 900

    rollout: RolloutConfig = Field(default_factory=RolloutConfig)

    @model_validator(mode="after")
    def _scalable_instance(self) -> _InstanceMode:
        problems = []
        if self.scaling is not None and is_burstable(self.instance_type):
            problems.append(
                (
                    "instance_type",
                    "burstable ml.t* instances cannot be autoscaled: choose a non-burstable "
                    f"type or set scaling to null (got {self.instance_type!r})",
                )
            )
        problems += rollout_problems(self.rollout, **self.instance_range())
        if problems:
            raise FieldProblems(problems)
        return self

    def instance_range(self) -> dict:
        """The fewest and most instances the variant may run while a deployment starts."""
        if self.scaling is None:
            count = self.initial_instance_count
            return {"fewest": count, "most": count, "counted_by": "initial_instance_count"}
        return {
            "fewest": self.scaling.min_capacity,
            "most": self.scaling.max_capacity,
            "counted_by": "scaling.min_capacity",
        }


class RealtimeConfig(_InstanceMode):
    scaling: RealtimeScaling | None = Field(default_factory=RealtimeScaling)


class AsyncConfig(_InstanceMode):
    max_concurrent_invocations_per_instance: Annotated[int, between(1, 1000)] = 4
    expire_after_days: AsyncObjectExpiry = Field(default_factory=AsyncObjectExpiry)
    scaling: AsyncScaling | None = Field(default_factory=AsyncScaling)
