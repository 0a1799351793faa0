"""The one interface every model backend implements, and the one result type they all return.

The server never looks inside a backend: it decodes an image into the channel order the backend
asks for (``input_format``), calls it, and encodes the ``Detections`` it gets back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

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
    """A loaded model: one instance per process, called from one worker thread at a time."""

    input_format: str  # "BGR" or "RGB": channel order of the HWC uint8 array __call__ expects
    class_names: tuple[str, ...]

    def __call__(self, image: np.ndarray) -> Detections: ...
