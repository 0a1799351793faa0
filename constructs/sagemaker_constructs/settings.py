"""The app's configuration: typed, validated in one place, defaults embedded here.

An environment file (`config/<env>.json`, chosen with `-c env=<env>`) only overrides what it names;
`-c model_data=<path or s3:// URI>` overrides `model.data` last. Every problem in a configuration is
collected and raised once as a `ConfigError` naming each field and its allowed values.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .instance_types import INSTANCE_TYPE_PATTERN, is_burstable, is_neuron, is_pre_turing_gpu

SERVERLESS_MEMORY_SIZES_MB = (1024, 2048, 3072, 4096, 5120, 6144)
# Synthesizes anywhere; deploying it fails until it points at a real model.tar.gz (README).
PLACEHOLDER_MODEL_DATA = "s3://replace-with-your-bucket/detectron2/model.tar.gz"
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+$")
STACK_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,39}$")
PACKAGE_GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(ValueError):
    """Every problem found in one configuration, reported at once."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid configuration ({source}):\n{lines}")


class FieldProblems(ValueError):
    """Raised by a model validator: problems pinned to fields of that model, reported per field."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))


def _between(low: float, high: float) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
        return value

    return AfterValidator(check)


def _one_of(choices: tuple[int, ...]) -> AfterValidator:
    def check(value: int) -> int:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))} (got {value})")
        return value

    return AfterValidator(check)


def _matching(pattern: re.Pattern[str], description: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"must be {description} (got {value!r})")
        return value

    return AfterValidator(check)


def _instance_type(value: str) -> str:
    if not INSTANCE_TYPE_PATTERN.match(value):
        raise ValueError(f"must look like ml.<family>.<size>, e.g. ml.g5.xlarge (got {value!r})")
    if is_neuron(value):
        raise ValueError(
            "must be a GPU (ml.g*, ml.p*) or CPU instance type: Inferentia/Trainium need a Neuron "
            f"build this project does not ship (got {value!r})"
        )
    if is_pre_turing_gpu(value):
        raise ValueError(
            "must not be ml.p2/ml.p3: the GPU image is built on CUDA 13, which supports T4 (ml.g4dn) "
            f"and newer GPUs only (got {value!r})"
        )
    return value


InstanceType = Annotated[str, AfterValidator(_instance_type)]
Seconds = Annotated[int, _between(0, 3600)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class _Scaling(_Section):
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
    max_capacity: Annotated[int, _between(1, 100)] = 2
    target_invocations_per_instance: Annotated[int, _between(1, 100_000)] = 100

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

    min_capacity: Annotated[int, _between(0, 100)] = 0
    max_capacity: Annotated[int, _between(1, 100)] = 2
    target_backlog_per_instance: Annotated[int, _between(1, 1000)] = 5


class _InstanceMode(_Section):
    enabled: bool = True
    instance_type: InstanceType = "ml.g5.xlarge"
    initial_instance_count: Annotated[int, _between(1, 100)] = 1
    # GPU variants only. The default AMI of ml.g4dn/g5/p4d has NVIDIA driver 470, too old for the
    # CUDA 13 image even with its forward-compatibility libraries; these AMIs have driver 535/550.
    inference_ami_version: Literal[
        "al2-ami-sagemaker-inference-gpu-3-1", "al2-ami-sagemaker-inference-gpu-2-1"
    ] = "al2-ami-sagemaker-inference-gpu-3-1"

    @model_validator(mode="after")
    def _scalable_instance(self) -> _InstanceMode:
        if self.scaling is not None and is_burstable(self.instance_type):
            raise FieldProblems(
                [
                    (
                        "instance_type",
                        "burstable ml.t* instances cannot be autoscaled: choose a non-burstable "
                        f"type or set scaling to null (got {self.instance_type!r})",
                    )
                ]
            )
        return self


class RealtimeConfig(_InstanceMode):
    scaling: RealtimeScaling | None = Field(default_factory=RealtimeScaling)


class AsyncConfig(_InstanceMode):
    max_concurrent_invocations_per_instance: Annotated[int, _between(1, 1000)] = 4
    scaling: AsyncScaling | None = Field(default_factory=AsyncScaling)


class ProvisionedConcurrencyScaling(_Section):
    """Target tracking on SageMakerVariantProvisionedConcurrencyUtilization."""

    max_capacity: Annotated[int, _between(1, 200)] = 2
    target_utilization: Annotated[float, _between(0.1, 1.0)] = 0.7


class ServerlessConfig(_Section):
    enabled: bool = True
    memory_size_mb: Annotated[int, _one_of(SERVERLESS_MEMORY_SIZES_MB)] = 6144
    max_concurrency: Annotated[int, _between(1, 200)] = 5
    provisioned_concurrency: Annotated[int, _between(1, 200)] | None = None
    provisioned_concurrency_scaling: ProvisionedConcurrencyScaling | None = None

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
                        f"({', '.join(map(str, SERVERLESS_MEMORY_SIZES_MB))}) (got {data['instance_type']!r})",
                    )
                ]
            )
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
        elif scaling is not None and not provisioned <= scaling.max_capacity <= self.max_concurrency:
            problems.append(
                (
                    "provisioned_concurrency_scaling.max_capacity",
                    f"must be between provisioned_concurrency ({provisioned}) and max_concurrency "
                    f"({self.max_concurrency}) (got {scaling.max_capacity})",
                )
            )
        if problems:
            raise FieldProblems(problems)
        return self


class BatchConfig(_Section):
    enabled: bool = True
    instance_type: InstanceType = "ml.g4dn.xlarge"
    # For the transform jobs' TransformAmiVersion on GPU instances (driver 535; see inference_ami_version).
    transform_ami_version: Literal["al2-ami-sagemaker-batch-gpu-535"] = "al2-ami-sagemaker-batch-gpu-535"


class ModelConfig(_Section):
    data: str = PLACEHOLDER_MODEL_DATA
    package_group_name: (
        Annotated[str, _matching(PACKAGE_GROUP_NAME, "1-63 letters, digits or inner hyphens")] | None
    ) = None
    approval_status: Literal["Approved", "PendingManualApproval", "Rejected"] = "Approved"
    description: Annotated[str, Field(max_length=1024)] = "Detectron2 Mask R-CNN instance segmentation"

    @field_validator("data")
    @classmethod
    def _existing_tarball_or_s3(cls, value: str, info: ValidationInfo) -> str:
        """Return the s3:// URI unchanged or the local tarball's absolute path."""
        if S3_URI.match(value):
            return value
        if not value.startswith("s3://"):
            base_dir = Path((info.context or {}).get("base_dir", Path.cwd()))
            path = base_dir / Path(value).expanduser()
            if path.name.endswith(".tar.gz") and path.is_file():
                return str(path.resolve())
        raise ValueError(
            f"must be an s3://bucket/key URI or the path of an existing local .tar.gz file (got {value!r})"
        )

    @property
    def is_s3_uri(self) -> bool:
        return self.data.startswith("s3://")


class AppConfig(_Section):
    name: Annotated[str, _matching(STACK_PREFIX, "a letter then up to 39 letters, digits or hyphens")] = (
        "Detectron2"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)
    async_: AsyncConfig = Field(default_factory=AsyncConfig, alias="async")
    serverless: ServerlessConfig = Field(default_factory=ServerlessConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)

    @property
    def package_group_name(self) -> str:
        return self.model.package_group_name or f"{self.name.lower()}-mask-rcnn"


def load_config(*, env: str | None, model_data: str | None, config_dir: Path, base_dir: Path) -> AppConfig:
    """Embedded defaults <- `config_dir/<env>.json` <- `model_data`; relative paths resolve against `base_dir`."""
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
    section: type[BaseModel] | None = AppConfig
    for part in location:
        fields = {field.alias or name: field for name, field in section.model_fields.items()}
        section = _section_type(fields[part].annotation) if part in fields else None
        if section is None:
            return []
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
    "AsyncConfig",
    "AsyncScaling",
    "BatchConfig",
    "ConfigError",
    "ModelConfig",
    "PLACEHOLDER_MODEL_DATA",
    "ProvisionedConcurrencyScaling",
    "RealtimeConfig",
    "RealtimeScaling",
    "SERVERLESS_MEMORY_SIZES_MB",
    "ServerlessConfig",
    "load_config",
]
