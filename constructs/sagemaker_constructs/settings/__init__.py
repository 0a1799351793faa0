"""The app's configuration: typed, validated in one place, defaults embedded here.

One module per section (`model`, `endpoints`, `serverless`, `batch`, …) on the shared building
blocks in `base`; this module composes them into `AppConfig` and owns the one entry point,
`load_config`.

An environment file (`config/<env>.json`, chosen with `-c env=<env>`) only overrides what it names;
`-c model_data=<path or s3:// URI>` overrides `model.data` last. Every problem in a configuration is
collected and raised once as a `ConfigError` naming each field and its allowed values.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import BaseModel, Field, ValidationError, model_validator

from d2sm_contract import DEFAULT_APP_NAME

from ..instance_types import has_bf16, is_gpu
from .base import ConfigError, FieldProblems, InstanceType, Seconds, Section, between, matching, one_of
from .batch import BatchConfig
from .capture import DataCaptureConfig
from .endpoints import (
    AsyncConfig,
    AsyncObjectExpiry,
    AsyncScaling,
    InstanceModeConfig,
    RealtimeConfig,
    RealtimeScaling,
    VariantConfig,
)
from .experiments import ShadowConfig, VariantPlan
from .inference_components import CopyScaling, InferenceComponentsConfig
from .model import EAGER_CPU_RUNTIME, PLACEHOLDER_MODEL_DATA, CpuRuntimeConfig, ModelConfig
from .monitoring import AlarmThresholds, LatencyThresholds, MonitoringConfig
from .rollout import CapacitySize, RolloutConfig
from .serverless import SERVERLESS_MEMORY_SIZES_MB, ProvisionedConcurrencyScaling, ServerlessConfig
from .versions import (
    CURRENT,
    CURRENT_VERSION,
    ModelVersion,
    ModelVersionField,
    approval_problems,
    pin_problems,
)

STACK_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,39}$")
ENV_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class AppConfig(Section):
    name: Annotated[str, matching(STACK_PREFIX, "a letter then up to 39 letters, digits or hyphens")] = (
        DEFAULT_APP_NAME
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)
    async_: AsyncConfig = Field(default_factory=AsyncConfig, alias="async")
    serverless: ServerlessConfig = Field(default_factory=ServerlessConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @property
    def package_group_name(self) -> str:
        return self.model.package_group_name or f"{self.name.lower()}-mask-rcnn"

    def endpoint_modes(self) -> dict[str, RealtimeConfig | AsyncConfig | ServerlessConfig]:
        """Config key -> section of every enabled endpoint mode."""
        modes: dict[str, RealtimeConfig | AsyncConfig | ServerlessConfig] = {
            "realtime": self.realtime,
            "async": self.async_,
            "serverless": self.serverless,
        }
        return {key: mode for key, mode in modes.items() if mode.enabled}

    def deployed_versions(self) -> dict[str, ModelVersion]:
        """Field path -> the registered version it deploys, for every enabled mode (batch included)."""
        modes = {**self.endpoint_modes(), **({"batch": self.batch} if self.batch.enabled else {})}
        versions = {f"{key}.model_version": mode.model_version for key, mode in modes.items()}
        if self.realtime.enabled:
            # Real-time variants and the shadow may each pin their own version.
            versions.update({f"realtime.{f}": v for f, v in self.realtime.deployed_versions().items()})
        return versions

    def deployed_cpu_instance_types(self) -> dict[str, str]:
        """CPU instance type -> the first field that deploys it, for every enabled instance mode."""
        found: dict[str, str] = {}

        def add(field: str, instance_types: tuple[str, ...]) -> None:
            for instance_type in instance_types:
                if not is_gpu(instance_type):
                    found.setdefault(instance_type, field)

        def add_mode(key: str, mode: InstanceModeConfig) -> None:
            field = f"{key}.instance_pools" if mode.instance_pools else f"{key}.instance_type"
            add(field, mode.instance_types)

        realtime = self.realtime
        if realtime.enabled and realtime.variants is None:
            add_mode("realtime", realtime)
        elif realtime.enabled:
            for index, plan in enumerate(realtime.production_variants()):
                add(f"realtime.variants.{index}.instance_type", (plan.instance_type,))
        shadow = realtime.shadow_variant() if realtime.enabled else None
        if shadow is not None:
            add("realtime.shadow.instance_type", (shadow.instance_type,))
        if self.async_.enabled:
            add_mode("async", self.async_)
        if self.batch.enabled:
            add("batch.instance_type", (self.batch.instance_type,))
        return found

    def _cpu_precision_problems(self) -> list[tuple[str, str]]:
        """bf16 is refused at start on a CPU without bfloat16: fail synth instead of the first deploy."""
        if self.model.cpu_runtime.precision != "bf16":
            return []
        places = [
            f"{instance_type} ({field})"
            for instance_type, field in self.deployed_cpu_instance_types().items()
            if not has_bf16(instance_type)
        ]
        if self.serverless.enabled:
            places.append("serverless (no stated CPU)")
        if not places:
            return []
        return [
            (
                "model.cpu_runtime.precision",
                "bf16 runs only on CPUs with bfloat16 (ml.c7i, ml.m7i, ml.r7i and the 8i families) and "
                "the container refuses to start elsewhere; these CPU Models may lack it: "
                f"{', '.join(places)}: use 'fp32', or move them to those families (got 'bf16')",
            )
        ]

    def _rollback_problems(self) -> list[tuple[str, str]]:
        if self.monitoring.enabled:
            return []
        return [
            (
                f"{key}.rollout.auto_rollback",
                "needs monitoring.enabled: it rolls back on the alarms monitoring creates; set it "
                "to false or enable monitoring (got true)",
            )
            for key, mode in self.endpoint_modes().items()
            if mode.rollout.auto_rollback
        ]

    @model_validator(mode="after")
    def _across_sections(self) -> AppConfig:
        """Rules that span sections: pins of this group, Approved when deployed, rollback alarms."""
        deployed = self.deployed_versions()
        problems = pin_problems(deployed, self.package_group_name)
        problems += approval_problems(deployed, self.model.approval_status)
        problems += self._rollback_problems()
        problems += self._cpu_precision_problems()
        if problems:
            raise FieldProblems(problems)
        return self


def load_config(*, env: str | None, model_data: str | None, config_dir: Path, base_dir: Path) -> AppConfig:
    """Embedded defaults <- `config_dir/<env>.json` <- `model_data`; relative paths resolve against
    `base_dir`."""
    data: dict[str, Any] = {}
    source = "embedded defaults"
    if env:
        path = config_dir / f"{env}.json"
        if not ENV_NAME.match(env) or not path.is_file():
            available = ", ".join(sorted(p.stem for p in config_dir.glob("*.json"))) or "none"
            raise ConfigError(
                f"-c env={env}", [f"env: no {config_dir.name}/{env}.json; available: {available}"]
            )
        source = f"{config_dir.name}/{path.name}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(source, [f"not valid JSON: {error}"]) from None
        if not isinstance(data, dict):
            raise ConfigError(source, ["the top level must be a JSON object"])
    if model_data is not None:
        model = data.get("model", {})
        data = {**data, "model": {**model, "data": model_data} if isinstance(model, dict) else model}
        source += " + -c model_data"
    try:
        return AppConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        raise ConfigError(source, _describe(error)) from None


def _describe(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"])
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, FieldProblems):
            problems += [f"{_join(location, field)}: {message}" for field, message in cause.problems]
        elif item["type"] == "value_error":
            problems.append(f"{location}: {cause}")
        elif item["type"] == "extra_forbidden":
            allowed = ", ".join(_field_names(item["loc"][:-1]))
            problems.append(f"{location}: unknown field; allowed: {allowed}")
        else:
            problems.append(f"{location}: {item['msg']} (got {item['input']!r})")
    return problems


def _join(location: str, field: str) -> str:
    return f"{location}.{field}" if location else field


def _field_names(location: tuple[Any, ...]) -> list[str]:
    """The field names (as written in config files) of the section at `location`."""
    section: type[BaseModel] = AppConfig
    for part in location:
        fields = {field.alias or name: field for name, field in section.model_fields.items()}
        found = _section_type(fields[part].annotation) if part in fields else None
        if found is None:
            return []
        section = found
    return [field.alias or name for name, field in section.model_fields.items()]


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _section_type(argument)
        if found is not None:
            return found
    return None


__all__ = [
    "AppConfig",
    "CpuRuntimeConfig",
    "EAGER_CPU_RUNTIME",
    "AsyncConfig",
    "AsyncObjectExpiry",
    "AsyncScaling",
    "AlarmThresholds",
    "CapacitySize",
    "LatencyThresholds",
    "MonitoringConfig",
    "RolloutConfig",
    "BatchConfig",
    "CopyScaling",
    "DataCaptureConfig",
    "InferenceComponentsConfig",
    "InstanceModeConfig",
    "CURRENT",
    "CURRENT_VERSION",
    "ConfigError",
    "FieldProblems",
    "InstanceType",
    "Section",
    "Seconds",
    "between",
    "matching",
    "one_of",
    "ModelConfig",
    "ModelVersion",
    "ModelVersionField",
    "PLACEHOLDER_MODEL_DATA",
    "ProvisionedConcurrencyScaling",
    "RealtimeConfig",
    "RealtimeScaling",
    "SERVERLESS_MEMORY_SIZES_MB",
    "ShadowConfig",
    "VariantConfig",
    "VariantPlan",
    "ServerlessConfig",
    "load_config",
]
