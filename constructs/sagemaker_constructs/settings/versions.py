"""Which registered model package version a mode (or a variant of it) deploys.

In a config file the field takes one of three forms:

- `"current"` (the default): the version this app registers now; its ARN reaches the mode stack
  through SSM at deploy time, so the mode follows every new registration;
- a version number, e.g. `8`: that version of this app's model package group;
- a model package version ARN of this app's group,
  e.g. `"arn:aws:sagemaker:eu-west-1:123456789012:model-package/detectron2-mask-rcnn/8"`.

A pinned version is written into the mode stack's template as a literal, so `cdk diff` (and the
pull request that changes the pin) shows the move from one version to the next. Whether an ARN
belongs to this app's group is checked where the group is known (`AppConfig`, `pin_problems`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

CURRENT = "current"
# Partition, region and account as SageMaker writes them; group names as `model.package_group_name`.
MODEL_PACKAGE_VERSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/"
    r"(?P<group>[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})/(?P<version>[1-9]\d{0,8})$"
)
_ALLOWED = (
    f'"{CURRENT}", a version number (1 or more), or a model package version ARN '
    "(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)"
)


@dataclass(frozen=True)
class ModelVersion:
    """A registered version to deploy: the current registration, or a pin by number or ARN."""

    number: int | None = None
    arn: str | None = None

    @classmethod
    def parse(cls, value: Any) -> ModelVersion:
        """Config value -> ModelVersion; a ValueError names the allowed forms."""
        if isinstance(value, ModelVersion):
            return value
        if value == CURRENT:
            return cls()
        if isinstance(value, int) and not isinstance(value, bool):
            if value >= 1:
                return cls(number=value)
        elif isinstance(value, str):
            match = MODEL_PACKAGE_VERSION_ARN.match(value)
            if match is not None:
                return cls(number=int(match["version"]), arn=value)
        raise ValueError(f"must be {_ALLOWED} (got {value!r})")

    @property
    def is_current(self) -> bool:
        return self.number is None

    @property
    def group(self) -> str | None:
        """The package group named by a pinned ARN (None for a number or the current version)."""
        match = None if self.arn is None else MODEL_PACKAGE_VERSION_ARN.match(self.arn)
        return None if match is None else match["group"]

    def to_config(self) -> str | int:
        return self.arn or self.number or CURRENT

    def __str__(self) -> str:
        return "the current registration" if self.is_current else f"version {self.number}"


# The default of every `version` parameter: immutable, so one instance serves them all.
CURRENT_VERSION = ModelVersion()


def _parse(value: Any) -> ModelVersion:
    return ModelVersion.parse(value)


# The config field type; use it wherever a registered version is chosen (a mode, a variant).
ModelVersionField = Annotated[ModelVersion, PlainValidator(_parse), PlainSerializer(ModelVersion.to_config)]


def pin_problems(pins: dict[str, ModelVersion], group_name: str) -> list[tuple[str, str]]:
    """(field, message) for every pinned ARN that is not a version of `group_name`."""
    problems = []
    for field, version in pins.items():
        # SageMaker writes ARNs in lower case; names compare case-insensitively.
        if version.arn is not None and (version.group or "").lower() != group_name.lower():
            problems.append(
                (
                    field,
                    f"must be a model package version of this app's group {group_name!r} "
                    f"(model.package_group_name), not of {version.group!r} (got {version.arn!r})",
                )
            )
    return problems


def approval_problems(deployed: dict[str, ModelVersion], approval_status: str) -> list[tuple[str, str]]:
    """SageMaker creates a Model only from an Approved version: the current one must be Approved
    while any field deploys it. (A pinned version's status lives in the registry; CreateModel
    refuses it there if it is not Approved.)"""
    following = sorted(field for field, version in deployed.items() if version.is_current)
    if approval_status == "Approved" or not following:
        return []
    return [
        (
            "model.approval_status",
            f"must be Approved while {', '.join(following)} deploy the current registration "
            f'("{CURRENT}"): SageMaker refuses to create a Model from a version that is not '
            f"Approved; pin an approved version in those fields to register this one as "
            f"{approval_status} (got {approval_status!r})",
        )
    ]
