"""The model artifact and its registry entry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from d2sm_contract import CPU_PRECISION_ENV, CPU_RUNTIME_ENV

from .base import FieldProblems, Section, matching

# Synthesizes anywhere; deploying it fails until it points at a real model.tar.gz (README).
PLACEHOLDER_MODEL_DATA = "s3://replace-with-your-bucket/detectron2/model.tar.gz"
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+$")
PACKAGE_GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class CpuRuntimeConfig(Section):
    """What runs the model's networks on the CPU Models (serverless, CPU instance types): the
    container's `CPU_RUNTIME` and `CPU_PRECISION`. GPU Models ignore it."""

    runtime: Literal["eager", "openvino"] = "eager"
    precision: Literal["fp32", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _precision_of_openvino(self) -> CpuRuntimeConfig:
        if self.runtime == "eager" and self.precision != "fp32":
            raise FieldProblems(
                [
                    (
                        "precision",
                        "applies to runtime 'openvino' only (eager runs the weights in fp32, as "
                        "trained): set runtime to 'openvino' or precision to 'fp32' "
                        f"(got {self.precision!r})",
                    )
                ]
            )
        return self

    def environment(self) -> dict[str, str]:
        """The container's variables for a CPU Model; none for eager, the container's default."""
        if self.runtime == "eager":
            return {}
        return {CPU_RUNTIME_ENV: self.runtime, CPU_PRECISION_ENV: self.precision}


# The default of every construct that takes one: eager, which sets nothing.
EAGER_CPU_RUNTIME = CpuRuntimeConfig()


class ModelConfig(Section):
    data: str = PLACEHOLDER_MODEL_DATA
    package_group_name: (
        Annotated[str, matching(PACKAGE_GROUP_NAME, "1-63 letters, digits or inner hyphens")] | None
    ) = None
    approval_status: Literal["Approved", "PendingManualApproval", "Rejected"] = "Approved"
    # The registered version's description: a change registers a new version.
    description: Annotated[str, Field(max_length=1024)] = "Detectron2 Mask R-CNN instance segmentation"
    # The group's: create-only on a retained group with a fixed name, which CloudFormation cannot
    # replace, so set it once, before the first deploy (a group created by an earlier release with
    # another model.description keeps that text: set it here to match).
    package_group_description: Annotated[str, Field(max_length=1024)] = (
        "Detectron2 Mask R-CNN instance segmentation"
    )
    # Eager torch or OpenVINO for the networks of the CPU Models, and its precision.
    cpu_runtime: CpuRuntimeConfig = Field(default_factory=CpuRuntimeConfig)

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
