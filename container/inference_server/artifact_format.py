"""What `model.tar.gz` holds: the file names of its layout, the schema of its metadata.json, and the
error raised for an artifact that does not fit them. Layout::

    metadata.json       always: format_version, backend, class_names (+ backend options)
    config.yaml         detectron2 only: the full (flattened) config; MODEL.WEIGHTS is ignored
    model_final.pth     the weights: {"model": state_dict}
    code/inference.py   optional: model_fn / input_fn / predict_fn / output_fn overrides
    openvino/           optional: the networks converted for CPU_RUNTIME=openvino, with the digest
                        of the weights they came from (package --cpu-runtime openvino)

Nothing here imports a backend: the backends, the loader (`artifact.py`) and the packager all read
this module, and none of them import each other to do so.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

FORMAT_VERSION: Final = 1
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model_final.pth"
CODE_DIR = "code"
USER_MODULE_FILE = "inference.py"
OPENVINO_DIR = "openvino"
# In OPENVINO_DIR: what the conversion came from (the weights' digest) and which networks it holds.
OPENVINO_MANIFEST = "manifest.json"


class ArtifactError(Exception):
    """The artifact is incomplete or does not load; the message is one line meant for people."""


BackendName = Literal["detectron2", "torchvision"]
ClassName = Annotated[str, StringConstraints(min_length=1)]


class TorchvisionOptions(BaseModel):
    """How to build torchvision's Mask R-CNN; num_classes is len(class_names) + 1 (background)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"] = "maskrcnn_resnet50_fpn"
    min_size: int = Field(default=800, gt=0)  # test-time resize of the short edge
    max_size: int = Field(default=1333, gt=0)  # cap on the long edge
    score_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    detections_per_image: int = Field(default=100, gt=0)


class ArtifactMetadata(BaseModel):
    """metadata.json. For detectron2, everything else (resize, thresholds) lives in config.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = FORMAT_VERSION
    backend: BackendName
    class_names: tuple[ClassName, ...] = Field(min_length=1)
    # Validated even when omitted, so a torchvision artifact always carries its options.
    torchvision: TorchvisionOptions | None = Field(default=None, validate_default=True)

    @field_validator("class_names")
    @classmethod
    def _unique(cls, class_names: tuple[str, ...]) -> tuple[str, ...]:
        duplicates = sorted({name for name in class_names if class_names.count(name) > 1})
        if duplicates:
            raise ValueError(f"must be unique, repeated: {', '.join(duplicates)}")
        return class_names

    @field_validator("torchvision")
    @classmethod
    def _only_for_torchvision(
        cls, options: TorchvisionOptions | None, info: ValidationInfo
    ) -> TorchvisionOptions | None:
        backend = info.data.get("backend")
        if backend == "torchvision":
            return options or TorchvisionOptions()
        if options is not None:
            raise ValueError(f"only allowed with backend torchvision, not {backend}")
        return None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"


def describe_validation_error(error: ValidationError) -> str:
    """pydantic's multi-line report as one line naming each bad field."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "metadata"
        problems.append(f"{field}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)
