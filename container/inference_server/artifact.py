"""The model artifact: what `model.tar.gz` holds, and how the server turns it into a Predictor.

SageMaker extracts `model.tar.gz` to /opt/ml/model before the container starts. Layout::

    metadata.json       always: format_version, backend, class_names (+ backend options)
    config.yaml         detectron2 only: the full (flattened) config; MODEL.WEIGHTS is ignored
    model_final.pth     the weights: {"model": state_dict}
    code/inference.py   optional: model_fn / input_fn / predict_fn / output_fn overrides

Weights are always read from the bundled file, never from a URL, so loading works under network
isolation. `python -m inference_server.package` writes this layout and checks that it loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from inference_server.backends.base import Predictor

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model_final.pth"
CODE_DIR = "code"
USER_MODULE_FILE = "inference.py"
# torchvision draws a box's mask where the mask head's probability exceeds this (detectron2 and
# torchvision's own examples use the same value).
MASK_THRESHOLD = 0.5


class ArtifactError(Exception):
    """The artifact is incomplete or does not load; the message is one line meant for people."""


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
    backend: Literal["detectron2", "torchvision"]
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


def read_metadata(model_dir: Path) -> ArtifactMetadata:
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: is this a model.tar.gz built by inference_server.package?")
    try:
        return ArtifactMetadata.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ArtifactError(f"{path} is invalid: {describe_validation_error(error)}") from None


def require_file(model_dir: Path, name: str) -> Path:
    path = Path(model_dir) / name
    if not path.is_file():
        raise ArtifactError(f"{path} is missing from the model artifact")
    return path


def backend_module(backend: str) -> ModuleType:
    """inference_server.backends.<backend>, imported only when an artifact asks for it."""
    try:
        return importlib.import_module(f"inference_server.backends.{backend}")
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != backend:
            raise
        raise ArtifactError(
            f"the artifact uses the {backend} backend but {backend} is not installed"
            + (": build it from source (see README)" if backend == "detectron2" else "")
        ) from None


def load_predictor(model_dir: Path) -> Predictor:
    """Build the backend named in metadata.json with its bundled weights, on cuda when available."""
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    return backend_module(metadata.backend).load(model_dir, metadata)


def load_user_module(model_dir: Path) -> ModuleType | None:
    """Import the artifact's optional code/inference.py; None when the artifact has none.

    code/ goes on sys.path first so inference.py can import modules shipped next to it, as in the
    SageMaker inference toolkit. Its requirements must be baked into the image: nothing is
    pip-installed at start-up.
    """
    code_dir = Path(model_dir) / CODE_DIR
    path = code_dir / USER_MODULE_FILE
    if not path.is_file():
        return None
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    spec = importlib.util.spec_from_file_location("inference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def extract(tarball: Path, dest: Path) -> Path:
    """Unpack model.tar.gz the way SageMaker does into /opt/ml/model (for local serving and tests)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as archive:
        archive.extractall(dest, filter="data")
    return dest


def weights_state_dict(checkpoint: object, path: Path) -> dict:
    """The model's state dict from a checkpoint: {"model": state_dict, ...} or a bare state dict."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        return checkpoint["model"]
    if isinstance(checkpoint, dict) and checkpoint:
        return checkpoint
    raise ArtifactError(f"{path} holds no state dict")


def describe_mismatch(
    missing: list[str], shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]], path: Path
) -> str:
    """One line saying why weights do not fit the model (names the first few offending keys)."""
    parts = []
    if shapes:
        key, in_file, in_model = shapes[0]
        more = f" and {len(shapes) - 1} more" if len(shapes) > 1 else ""
        parts.append(
            f"shape mismatch for {key}: {tuple(in_file)} in the file, {tuple(in_model)} in the model{more}"
        )
    shape_keys = {key for key, _, _ in shapes}
    missing = [key for key in missing if key not in shape_keys]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        parts.append(f"{len(missing)} model weights missing from the file ({', '.join(missing[:3])}{more})")
    return f"{path} does not fit the model: " + "; ".join(parts)


def first_line(error: BaseException) -> str:
    """An exception as one line: libraries (torch.load, yacs) raise multi-line messages."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
