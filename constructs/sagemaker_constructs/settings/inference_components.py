"""Real-time inference components: the model placed on the endpoint by its compute needs, scaled by
copies down to zero, with instances following the copies (managed instance scaling)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..instance_types import INSTANCE_RESOURCES, is_gpu
from .base import FieldProblems, Seconds, Section, between

# Target per copy when `target_value` is not given: invocations per copy per minute, or requests
# in flight per copy (one model thread per copy: more than a few only queue).
DEFAULT_TARGETS = {"invocations_per_copy": 100.0, "concurrent_requests_per_copy": 2.0}


class CopyScaling(Section):
    """Copy-count target tracking, plus the step out of zero driven by NoCapacityInvocationFailures."""

    min_copies: Annotated[int, between(0, 100)] = 0
    max_copies: Annotated[int, between(1, 100)] = 2
    metric: Literal["invocations_per_copy", "concurrent_requests_per_copy"] = "invocations_per_copy"
    target_value: Annotated[float, between(0.1, 100_000)] | None = None
    scale_in_cooldown_seconds: Seconds = 300
    scale_out_cooldown_seconds: Seconds = 60

    @property
    def target(self) -> float:
        return DEFAULT_TARGETS[self.metric] if self.target_value is None else self.target_value

    @model_validator(mode="after")
    def _ordered(self) -> CopyScaling:
        if self.min_copies > self.max_copies:
            raise FieldProblems(
                [("max_copies", f"must be at least min_copies ({self.min_copies}) (got {self.max_copies})")]
            )
        return self


class InferenceComponentsConfig(Section):
    """Per-copy compute requirements, instance bounds and copy scaling of the real-time component."""

    max_instance_count: Annotated[int, between(1, 100)] = 2
    accelerators: Annotated[int, between(0, 8)] = 1
    cpu_cores: Annotated[float, between(0.25, 192)] = 2.0
    memory_mb: Annotated[int, between(128, 2_097_152)] = 8192
    # (Each copy's health-check and model-download limits are the section's
    # container_startup_health_check_timeout_seconds and model_data_download_timeout_seconds.)
    # From zero: instance launch + image pull + model load. The step policy waits this long before
    # adding another copy, so one cold start is not answered with a second one.
    cold_start_seconds: Annotated[int, between(60, 3600)] = 600
    routing_strategy: Literal["LEAST_OUTSTANDING_REQUESTS", "RANDOM"] = "LEAST_OUTSTANDING_REQUESTS"
    scaling: CopyScaling | None = Field(default_factory=CopyScaling)

    def copies_per_instance(self, instance_type: str) -> int:
        resources = INSTANCE_RESOURCES[instance_type]
        fits = [int(resources.vcpus // self.cpu_cores), resources.memory_mib // self.memory_mb]
        if self.accelerators:
            fits.append(resources.gpus // self.accelerators)
        return max(0, min(fits))

    def problems_on(self, instance_type: str, *, field: str = "instance_type") -> list[tuple[str, str]]:
        """(field, message) for each way a copy does not fit `instance_type` (fields relative to the
        real-time section; `field` names where the type was chosen)."""
        if instance_type not in INSTANCE_RESOURCES:
            return [
                (
                    field,
                    "must be an instance type whose vCPUs, memory and GPUs this project knows when "
                    f"inference_components is set: one of {', '.join(INSTANCE_RESOURCES)} "
                    f"(got {instance_type!r})",
                )
            ]
        resources = INSTANCE_RESOURCES[instance_type]
        problems = []
        if is_gpu(instance_type) and self.accelerators < 1:
            problems.append(
                (
                    "inference_components.accelerators",
                    f"must be at least 1 on {instance_type}: the GPU image serves from a GPU (got 0)",
                )
            )
        elif self.accelerators > resources.gpus:
            problems.append(
                (
                    "inference_components.accelerators",
                    f"must be at most {resources.gpus}, the GPUs of one {instance_type} "
                    f"(got {self.accelerators})",
                )
            )
        if self.cpu_cores > resources.vcpus:
            problems.append(
                (
                    "inference_components.cpu_cores",
                    f"must be at most {resources.vcpus}, the vCPUs of one {instance_type} "
                    f"(got {self.cpu_cores})",
                )
            )
        if self.memory_mb > resources.memory_mib:
            problems.append(
                (
                    "inference_components.memory_mb",
                    f"must be at most {resources.memory_mib}, the memory (MiB) of one {instance_type} "
                    f"(got {self.memory_mb})",
                )
            )
        if not problems and self.scaling is not None:
            capacity = self.copies_per_instance(instance_type) * self.max_instance_count
            if self.scaling.max_copies > capacity:
                problems.append(
                    (
                        "inference_components.scaling.max_copies",
                        f"must be at most {capacity}: {self.copies_per_instance(instance_type)} copies fit "
                        f"on one {instance_type} and max_instance_count is {self.max_instance_count} "
                        f"(got {self.scaling.max_copies})",
                    )
                )
        return problems
