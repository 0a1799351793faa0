"""torchvision's Mask R-CNN behind the Predictor interface: CI's stand-in for detectron2.

Built with weights=None and weights_backbone=None, so nothing is downloaded: every weight comes
from the artifact. torchvision labels count the background as class 0; Detections.classes index
class_names, so they are the labels minus one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.transforms.functional import to_tensor

from inference_server.artifact_format import WEIGHTS_FILE, ArtifactError, ArtifactMetadata
from inference_server.backends.base import Detections, describe_mismatch, require_file, weights_state_dict
from inference_server.errors import first_line

# A box's mask is drawn where the mask head's probability exceeds this (detectron2 and torchvision's
# own examples use the same value).
MASK_THRESHOLD = 0.5
ARCHITECTURES = {
    "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn,
    "maskrcnn_resnet50_fpn_v2": maskrcnn_resnet50_fpn_v2,
}


def build_model(metadata: ArtifactMetadata) -> MaskRCNN:
    """The untrained network metadata.json describes (its weights are random until loaded)."""
    options = metadata.torchvision
    assert options is not None, "metadata validation fills in the torchvision block"
    return ARCHITECTURES[options.architecture](
        weights=None,
        weights_backbone=None,
        num_classes=metadata.num_classes + 1,
        min_size=options.min_size,
        max_size=options.max_size,
        box_score_thresh=options.score_threshold,
        box_detections_per_img=options.detections_per_image,
    )


def load_weights(model: MaskRCNN, path: Path) -> None:
    """Load a state dict, refusing one that leaves any model weight unset or mis-shaped."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ArtifactError(f"{path} is not a PyTorch checkpoint: {first_line(error)}") from None
    state = weights_state_dict(checkpoint, path)
    expected = model.state_dict()
    shapes = [
        (key, tuple(value.shape), tuple(expected[key].shape))
        for key, value in state.items()
        if key in expected and isinstance(value, torch.Tensor) and value.shape != expected[key].shape
    ]
    missing = [key for key in expected if key not in state]
    if missing or shapes:
        raise ArtifactError(describe_mismatch(missing, shapes, path))
    # Keys the model does not have are ignored, as detectron2's checkpointer does.
    model.load_state_dict(state, strict=False)


class TorchvisionPredictor:
    input_format = "RGB"

    def __init__(self, model: MaskRCNN, class_names: tuple[str, ...], device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.class_names = class_names
        self.device = device

    def __call__(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        if not image.flags.writeable:  # torch warns on tensors viewing read-only memory
            image = image.copy()
        with torch.inference_mode():
            output = self.model([to_tensor(image).to(self.device)])[0]
        masks = output.get("masks")
        return Detections(
            image_height=height,
            image_width=width,
            # float32 also under MIXED_PRECISION (autocast may leave half-precision outputs).
            boxes=output["boxes"].float().cpu().numpy(),
            scores=output["scores"].float().cpu().numpy(),
            classes=(output["labels"] - 1).cpu().numpy(),
            # (N, 1, H, W) probabilities pasted at full image size.
            masks=None if masks is None else (masks[:, 0] > MASK_THRESHOLD).cpu().numpy(),
        )


def load(model_dir: Path, metadata: ArtifactMetadata) -> TorchvisionPredictor:
    model = build_model(metadata)
    load_weights(model, require_file(model_dir, WEIGHTS_FILE))
    # The loading thread's current GPU: one model copy per GPU, each loaded by its own thread.
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    return TorchvisionPredictor(model, metadata.class_names, device)


def export(metadata: ArtifactMetadata, weights: Path, config: Path | None, staging_dir: Path) -> None:
    """Write the artifact's weights file: only the model's state dict (no optimizer state)."""
    if config is not None:
        raise ArtifactError("the torchvision backend takes no config file: its options go in metadata.json")
    model = build_model(metadata)
    load_weights(model, weights)
    torch.save({"model": model.state_dict()}, Path(staging_dir) / WEIGHTS_FILE)
