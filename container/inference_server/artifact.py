"""Turning an extracted artifact into a Predictor: read metadata.json, import the backend it names,
load it; and the artifact's optional user code (code/inference.py).

SageMaker extracts `model.tar.gz` to /opt/ml/model before the container starts (the layout is in
`artifact_format.py`). Weights are always read from the bundled file, never from a URL, so loading
works under network isolation. `python -m inference_server.package` writes the layout and checks
that it loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import cast

from pydantic import ValidationError

from inference_server.artifact_format import (
    CODE_DIR,
    METADATA_FILE,
    USER_MODULE_FILE,
    ArtifactError,
    ArtifactMetadata,
    describe_validation_error,
)
from inference_server.backends.base import Backend, Predictor

# The artifact's public face for callers outside the server (the d2sm client's validator).
__all__ = [
    "ArtifactError",
    "backend_module",
    "extract",
    "load_predictor",
    "load_user_module",
    "read_metadata",
]


def read_metadata(model_dir: Path) -> ArtifactMetadata:
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: is this a model.tar.gz built by inference_server.package?")
    try:
        return ArtifactMetadata.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ArtifactError(f"{path} is invalid: {describe_validation_error(error)}") from None


def backend_module(backend: str) -> Backend:
    """inference_server.backends.<backend>, imported only when an artifact asks for it: each backend
    imports its own ML library (torch, detectron2), which may be absent from the image."""
    try:
        # A module that implements the Backend protocol (its load and export functions).
        return cast(Backend, importlib.import_module(f"inference_server.backends.{backend}"))
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
