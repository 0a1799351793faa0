"""Building blocks of every configuration section: the error types, field checks and the section base."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from ..instance_types import INSTANCE_TYPE_PATTERN, is_arm, is_neuron, is_pre_turing_gpu


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


def between(low: float, high: float) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
        return value

    return AfterValidator(check)


def one_of(choices: tuple[int, ...]) -> AfterValidator:
    def check(value: int) -> int:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))} (got {value})")
        return value

    return AfterValidator(check)


def matching(pattern: re.Pattern[str], description: str) -> AfterValidator:
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
    if is_arm(value):
        raise ValueError(
            "must be an x86_64 instance type: Graviton (e.g. ml.c7g, ml.m7g, ml.r7g, ml.g5g) and Grace "
            f"(e.g. ml.p6e-gb200) hosts are arm64 and the images are built for amd64 (got {value!r})"
        )
    if is_pre_turing_gpu(value):
        raise ValueError(
            "must not be ml.p2/ml.p3: the GPU image is built on CUDA 13, which supports T4 (ml.g4dn) "
            f"and newer GPUs only (got {value!r})"
        )
    return value


InstanceType = Annotated[str, AfterValidator(_instance_type)]
Seconds = Annotated[int, between(0, 3600)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)
