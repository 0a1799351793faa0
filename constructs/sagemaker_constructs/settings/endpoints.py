"""Instance-based endpoint modes (real-time, async) and their autoscaling."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..instance_types import is_burstable
from .base import FieldProblems, InstanceType, Seconds, Section, between
from .capture import DataCaptureConfig
from .inference_components import InferenceComponentsConfig
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


class _InstanceMode(Section):
    enabled: bool = True
    model_version: ModelVersionField = ModelVersion()
    instance_type: InstanceType = "ml.g5.xlarge"
    initial_instance_count: Annotated[int, between(1, 100)] = 1
    # GPU variants only. The default AMI of ml.g4dn/g5/p4d has NVIDIA driver 470, too old for the
    # CUDA 13 image even with its forward-compatibility libraries; these AMIs have driver 535/550.
    inference_ami_version: Literal[
        "al2-ami-sagemaker-inference-gpu-3-1", "al2-ami-sagemaker-inference-gpu-2-1"
    ] = "al2-ami-sagemaker-inference-gpu-3-1"

    data_capture: DataCaptureConfig | None = None

    @model_validator(mode="after")
    def _cross_field(self) -> _InstanceMode:
        problems = self.cross_field_problems()
        if problems:
            raise FieldProblems(problems)
        return self

    def cross_field_problems(self) -> list[tuple[str, str]]:
        if self.scaling is not None and is_burstable(self.instance_type):
            return [
                (
                    "instance_type",
                    "burstable ml.t* instances cannot be autoscaled: choose a non-burstable "
                    f"type or set scaling to null (got {self.instance_type!r})",
                )
            ]
        return []


class RealtimeConfig(_InstanceMode):
    scaling: RealtimeScaling | None = Field(default_factory=RealtimeScaling)
    # Set: the model runs as an inference component that can scale to zero (see
    # inference_components.py); null: the classic variant, instance-count scaling, never zero.
    inference_components: InferenceComponentsConfig | None = None

    def cross_field_problems(self) -> list[tuple[str, str]]:
        components = self.inference_components
        if components is None:
            return super().cross_field_problems()
        problems = []
        if self.scaling is not None:
            problems.append(
                (
                    "scaling",
                    "must be null with inference_components: instances follow the copies through "
                    "managed instance scaling (inference_components.max_instance_count), and copies "
                    "scale with inference_components.scaling; SageMaker does not autoscale the "
                    "instance count of a variant that hosts inference components",
                )
            )
        if self.data_capture is not None:
            problems.append(
                (
                    "data_capture",
                    "must be null with inference_components: this project captures data on "
                    "model-based variants only (the classic real-time variant and async)",
                )
            )
        return problems + components.problems_on(self.instance_type)


class AsyncConfig(_InstanceMode):
    max_concurrent_invocations_per_instance: Annotated[int, between(1, 1000)] = 4
    scaling: AsyncScaling | None = Field(default_factory=AsyncScaling)
