"""The contract every model backend implements, the one result type they all return, and the
helpers they share.

The server never looks inside a backend: it decodes an image into the channel order the backend
asks for (``input_format``), calls it, and encodes the ``Detections`` it gets back. A backend is a
module of this package (``inference_server.backends.<name>``, the name in metadata.json) whose
``load`` and ``export`` functions satisfy ``Backend``; it is imported only when an artifact names it,
as it imports its own ML library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from inference_server.artifact_format import ArtifactError, ArtifactMetadata
from inference_server.masks import PastedMasks


@dataclass(frozen=True)
class Detections:
    """Instances predicted for one image, in original-image pixel coordinates, on the CPU."""

    image_height: int
    image_width: int
    boxes: np.ndarray  # (N, 4) float32, XYXY
    scores: np.ndarray  # (N,) float32, descending
    classes: np.ndarray  # (N,) int64, index into the predictor's class_names
    # (N, H, W) bool at full image size; None if the model has no mask head. The backends return
    # PastedMasks (each mask pasted into its box region when read); a custom predict_fn may return
    # an array.
    masks: np.ndarray | PastedMasks | None

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class Predictor(Protocol):
    """A loaded model: one instance per model copy, called from that copy's thread only."""

    input_format: str  # "BGR" or "RGB": channel order of the HWC uint8 array __call__ expects
    class_names: tuple[str, ...]

    def __call__(self, image: np.ndarray) -> Detections: ...


class Backend(Protocol):
    """What a backend module provides (``inference_server.backends.torchvision`` is one)."""

    def load(self, model_dir: Path, metadata: ArtifactMetadata) -> Predictor:
        """The Predictor for an extracted artifact, on the calling thread's current device (cuda when
        available); raises ArtifactError, one line, for an artifact that does not fit the backend."""
        ...

    def export(
        self, metadata: ArtifactMetadata, weights: Path, config: Path | None, staging_dir: Path
    ) -> None:
        """Write the backend's files of the artifact (weights, config) into staging_dir from a training
        output, refusing (ArtifactError) weights or a config that would not load."""
        ...


def require_file(model_dir: Path, name: str) -> Path:
    path = Path(model_dir) / name
    if not path.is_file():
        raise ArtifactError(f"{path} is missing from the model artifact")
    return path


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
