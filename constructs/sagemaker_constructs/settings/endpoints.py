"""Instance-based endpoint modes (real-time, async) and their autoscaling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..instance_types import is_burstable, is_gpu, model_copies
from .base import FieldProblems, InstanceType, Seconds, Section, between
from .capture import DataCaptureConfig
from .experiments import (
    DEFAULT_VARIANT_NAME,
    MAX_PRODUCTION_VARIANTS,
    ShadowConfig,
    VariantName,
    VariantPlan,
)
from .inference_components import InferenceComponentsConfig
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


class VariantConfig(Section):
    """One weighted production variant of an A/B test. Unset fields take the real-time section's
    value; `scaling` set to null turns autoscaling off for this variant only."""

    name: VariantName
    weight: Annotated[float, between(0, 1000)]
    model_version: ModelVersionField | None = None
    instance_type: InstanceType | None = None
    initial_instance_count: Annotated[int, between(1, 100)] | None = None
    scaling: RealtimeScaling | None = None


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


# SageMaker's limit of instance types per production variant (InstancePools).
MAX_INSTANCE_POOLS = 5
# How long SageMaker may look for capacity across all pools before the deployment fails
# (VariantInstanceProvisionTimeoutInSeconds, 300-3600 s) when instance_pools leaves it unset.
DEFAULT_PROVISION_TIMEOUT_SECONDS = 900


class InstanceModeConfig(Section):
    if TYPE_CHECKING:
        # Each mode declares its own scaling section (a pydantic field there); the shared checks
        # below read only the capacity bounds every one has.
        scaling: _Scaling | None

    enabled: bool = True
    model_version: ModelVersionField = ModelVersion()
    instance_type: InstanceType = "ml.g5.xlarge"
    # Set: the variant's instance types in priority order (InstancePools); SageMaker falls back to
    # the next on insufficient capacity at creation and scale-out. Replaces instance_type.
    instance_pools: list[InstanceType] | None = None
    provision_timeout_seconds: Annotated[int, between(300, 3600)] | None = None
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

    data_capture: DataCaptureConfig | None = None
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)

    @model_validator(mode="after")
    def _cross_field(self) -> InstanceModeConfig:
        problems = self.cross_field_problems()
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def instance_types(self) -> tuple[str, ...]:
        """The variant's instance types, priority 1 first: `instance_pools`, else `instance_type`."""
        return tuple(self.instance_pools) if self.instance_pools is not None else (self.instance_type,)

    @property
    def primary_instance_type(self) -> str:
        return self.instance_types[0]

    @property
    def provision_timeout(self) -> int | None:
        """VariantInstanceProvisionTimeoutInSeconds: as set, or the default when pools are set."""
        if self.provision_timeout_seconds is None and self.instance_pools is not None:
            return DEFAULT_PROVISION_TIMEOUT_SECONDS
        return self.provision_timeout_seconds

    def cross_field_problems(self) -> list[tuple[str, str]]:
        problems = self._pool_problems()
        field = "instance_type" if self.instance_pools is None else "instance_pools"
        for instance_type in self.instance_types:
            if self.scaling is not None and is_burstable(instance_type):
                problems.append(
                    (
                        field,
                        "burstable ml.t* instances cannot be autoscaled: choose a non-burstable "
                        f"type or set scaling to null (got {instance_type!r})",
                    )
                )
        return problems + rollout_problems(self.rollout, **self.instance_range())

    def _pool_problems(self) -> list[tuple[str, str]]:
        pools = self.instance_pools
        if pools is None:
            if self.provision_timeout_seconds is not None:
                return [
                    (
                        "provision_timeout_seconds",
                        "needs instance_pools: it bounds SageMaker's search for capacity across "
                        "the pools; with one instance_type there is nothing to fall back to "
                        f"(got {self.provision_timeout_seconds})",
                    )
                ]
            return []
        problems = []
        if "instance_type" in self.model_fields_set:
            problems.append(
                (
                    "instance_type",
                    "must be unset with instance_pools: a variant has either one instance type or "
                    f"pools, and the pools' first entry is priority 1 (got {self.instance_type!r})",
                )
            )
        if not 1 <= len(pools) <= MAX_INSTANCE_POOLS:
            problems.append(
                (
                    "instance_pools",
                    f"must list 1 to {MAX_INSTANCE_POOLS} instance types (SageMaker's limit per "
                    f"variant), or be null for instance_type (got {len(pools)})",
                )
            )
        duplicates = sorted({pool for pool in pools if pools.count(pool) > 1})
        if duplicates:
            problems.append(
                (
                    "instance_pools",
                    f"must list distinct instance types (got {', '.join(duplicates)} more than once)",
                )
            )
        return problems

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


class RealtimeConfig(InstanceModeConfig):
    scaling: RealtimeScaling | None = Field(default_factory=RealtimeScaling)
    # Set: the model runs as an inference component that can scale to zero (see
    # inference_components.py); null: the classic variant, instance-count scaling, never zero.
    inference_components: InferenceComponentsConfig | None = None

    # Set: weighted production variants (A/B), each deploying its own registered version.
    variants: list[VariantConfig] | None = None
    # Set: a shadow variant receiving a copy of the production traffic.
    shadow: ShadowConfig | None = None

    def instance_range(self) -> dict:
        """As for one variant, or an A/B test's smallest and largest variant."""
        if self.variants is None or not self.variants:
            return super().instance_range()
        ranges = [
            (plan.scaling.min_capacity, plan.scaling.max_capacity)
            if plan.scaling is not None
            else (plan.initial_instance_count, plan.initial_instance_count)
            for plan in self.production_variants()
        ]
        return {
            "fewest": min(low for low, _ in ranges),
            "most": max(high for _, high in ranges),
            "counted_by": "the smallest variant's scaling.min_capacity or initial_instance_count",
        }

    def _experiment_problems(self) -> list[tuple[str, str]]:
        problems = _experiment_problems_of(self)
        if self.instance_pools is not None:
            for field in ("variants", "shadow"):
                if getattr(self, field) is not None:
                    problems.append(
                        (
                            field,
                            "must be null with instance_pools: an A/B or shadow test compares "
                            "variants on known hardware, and pools let SageMaker change a variant's "
                            "instance type on its own; give each variant its instance_type instead",
                        )
                    )
        return problems

    def production_variants(self) -> list[VariantPlan]:
        """The production variants to deploy, defaults resolved (one `AllTraffic` without `variants`)."""
        if self.variants is None:
            return [
                VariantPlan(
                    DEFAULT_VARIANT_NAME,
                    1.0,
                    self.model_version,
                    self.primary_instance_type,
                    self.initial_instance_count,
                    self.scaling,
                )
            ]
        return [
            VariantPlan(
                variant.name,
                variant.weight,
                variant.model_version or self.model_version,
                variant.instance_type or self.instance_type,
                variant.initial_instance_count or self.initial_instance_count,
                variant.scaling if "scaling" in variant.model_fields_set else self.scaling,
            )
            for variant in self.variants
        ]

    def shadow_variant(self) -> VariantPlan | None:
        """The shadow variant; its weight relative to the one production variant's (1) is the
        fraction of calls SageMaker copies to it."""
        shadow = self.shadow
        if shadow is None:
            return None
        production_weight = self.production_variants()[0].weight
        return VariantPlan(
            shadow.name,
            production_weight * shadow.sampling_percentage / 100,
            shadow.model_version or self.model_version,
            shadow.instance_type or self.instance_type,
            shadow.initial_instance_count,
            None,
        )

    def deployed_versions(self) -> dict[str, ModelVersion]:
        """Field path (within this section) -> version, for each field that picks a version."""
        versions = {"model_version": self.model_version}
        for index, variant in enumerate(self.variants or []):
            if variant.model_version is not None:
                versions[f"variants.{index}.model_version"] = variant.model_version
        if self.shadow is not None and self.shadow.model_version is not None:
            versions["shadow.model_version"] = self.shadow.model_version
        return versions

    def cross_field_problems(self) -> list[tuple[str, str]]:
        components = self.inference_components
        if components is None:
            return super().cross_field_problems() + self._experiment_problems()
        problems = self._pool_problems()
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
        for field in ("variants", "shadow"):
            if getattr(self, field) is not None:
                problems.append(
                    (
                        field,
                        "must be null with inference_components: this project runs one model as one "
                        "component on a single variant; SageMaker's shadow tests and weighted variants "
                        "route between model-based variants",
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
        if self.rollout.traffic_routing != "ALL_AT_ONCE":
            problems.append(
                (
                    "rollout.traffic_routing",
                    "must be ALL_AT_ONCE with inference_components: the endpoint may run 0 instances "
                    "and a new model version updates the component, not the endpoint "
                    f"(got {self.rollout.traffic_routing!r})",
                )
            )
        if self.instance_pools is not None and len({is_gpu(t) for t in self.instance_types}) > 1:
            return problems + [
                (
                    "instance_pools",
                    "must be all GPU or all CPU types with inference_components: the component has "
                    "one specification (one image, one accelerator count) for every pool "
                    f"(got {', '.join(self.instance_types)})",
                )
            ]
        field = "instance_type" if self.instance_pools is None else "instance_pools"
        for instance_type in self.instance_types:
            problems += components.problems_on(instance_type, field=field)
        return list(dict.fromkeys(problems))


class AsyncConfig(InstanceModeConfig):
    # null: 2 per model copy the container loads (one per GPU): one running, one being decoded or
    # encoded. More only moves the queue from SageMaker's backlog, which scaling watches, into the
    # container.
    max_concurrent_invocations_per_instance: Annotated[int, between(1, 1000)] | None = None
    expire_after_days: AsyncObjectExpiry = Field(default_factory=AsyncObjectExpiry)
    scaling: AsyncScaling | None = Field(default_factory=AsyncScaling)

    @property
    def concurrent_invocations_per_instance(self) -> int:
        if self.max_concurrent_invocations_per_instance is not None:
            return self.max_concurrent_invocations_per_instance
        return 2 * model_copies(self.primary_instance_type)

    def cross_field_problems(self) -> list[tuple[str, str]]:
        problems = super().cross_field_problems()
        defaults = {t: 2 * model_copies(t) for t in self.instance_types}
        if self.max_concurrent_invocations_per_instance is None and len(set(defaults.values())) > 1:
            problems.append(
                (
                    "max_concurrent_invocations_per_instance",
                    "must be set when the instance pools load different numbers of model copies: "
                    "the default is 2 per copy (one per GPU) and SageMaker takes one value for every "
                    f"instance of the endpoint (the default would be "
                    f"{', '.join(f'{t}: {n}' for t, n in defaults.items())})",
                )
            )
        return problems


def _experiment_problems_of(config: RealtimeConfig) -> list[tuple[str, str]]:
    problems = []
    variants = config.variants
    if variants is not None:
        if not 1 <= len(variants) <= MAX_PRODUCTION_VARIANTS:
            problems.append(
                (
                    "variants",
                    f"must list 1 to {MAX_PRODUCTION_VARIANTS} variants (SageMaker's limit per endpoint), "
                    f"or be null for one variant (got {len(variants)})",
                )
            )
        names = [variant.name for variant in variants]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            problems.append(
                ("variants", f"names must be unique (got {', '.join(duplicates)} more than once)")
            )
        if variants and sum(variant.weight for variant in variants) <= 0:
            problems.append(
                (
                    "variants",
                    "weights must give a positive total: SageMaker routes each call by weight / total "
                    f"(got {', '.join(f'{v.name}={v.weight:g}' for v in variants)})",
                )
            )
        for index, plan in enumerate(config.production_variants()):
            if plan.scaling is not None and is_burstable(plan.instance_type):
                problems.append(
                    (
                        f"variants.{index}.instance_type",
                        "burstable ml.t* instances cannot be autoscaled: choose a non-burstable type or "
                        f"set this variant's scaling to null (got {plan.instance_type!r})",
                    )
                )
    shadow = config.shadow
    if shadow is not None:
        if variants is not None and len(variants) > 1:
            problems.append(
                (
                    "shadow",
                    "SageMaker allows a shadow variant only beside exactly one production variant: "
                    f"remove shadow or keep one entry in variants (got {len(variants)} variants)",
                )
            )
        production_names = [plan.name for plan in config.production_variants()]
        if shadow.name in production_names:
            problems.append(
                (
                    "shadow.name",
                    f"must differ from the production variant names {production_names} (got {shadow.name!r})",
                )
            )
    return problems
