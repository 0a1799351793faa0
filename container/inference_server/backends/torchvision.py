"""torchvision's Mask R-CNN behind the Predictor interface: CI's stand-in for detectron2.

Built with weights=None and weights_backbone=None, so nothing is downloaded: every weight comes
from the artifact. torchvision labels count the background as class 0; Detections.classes index
class_names, so they are the labels minus one.

Masks are not pasted into N full-size float images: the model's postprocess gets the boxes only,
and each mask is pasted into its box region when it is read (inference_server.masks), with the
arithmetic of torchvision's paste_masks_in_image.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from inference_server.artifact_format import WEIGHTS_FILE, ArtifactError, ArtifactMetadata
from inference_server.backends.base import Detections, describe_mismatch, require_file, weights_state_dict
from inference_server.cpu_runtime import (
    Network,
    Unpatched,
    backbone_network,
    replace_method,
    rpn_head_network,
)
from inference_server.errors import first_line
from inference_server.masks import Crop, PastedMasks, autocast_context
from inference_server.memory import TORCHVISION_MEMORY, MemoryModel

# A box's mask is drawn where the mask head's probability exceeds this (detectron2 and torchvision's
# own examples use the same value).
MASK_THRESHOLD = 0.5
# Where the roi heads' 28x28 mask probabilities go instead of "masks", so that the transform's
# postprocess (which pastes every "masks" entry into the full image) leaves them alone.
MASK_PROBABILITIES = "mask_probabilities"
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


class TorchvisionMaskPaste:
    """paste_masks_in_image (torchvision.models.detection.roi_heads) for one mask at a time,
    returning only the region paste_mask_in_image writes, thresholded as the predictor does.

    The same calls in the same order (expand_masks, expand_boxes, then per mask the interpolation
    to its box size), so every pixel of the region has the value the full-size paste gives it; the
    rest of the full-size mask is zeros there too.
    """

    def __init__(self, probabilities: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> None:
        self.masks, scale = expand_masks(probabilities, padding=1)  # (N, 1, M + 2, M + 2)
        self.boxes = expand_boxes(boxes, scale).to(dtype=torch.int64).tolist()
        self.height, self.width = height, width
        self.precision = autocast_context()

    def __call__(self, index: int) -> Crop:
        left, top, right, bottom = self.boxes[index]
        x0, x1 = max(left, 0), min(right + 1, self.width)
        y0, y1 = max(top, 0), min(bottom + 1, self.height)
        if x1 <= x0 or y1 <= y0:  # a box wholly outside the image pastes nothing
            return 0, 0, np.zeros((0, 0), bool)
        size = (max(bottom - top + 1, 1), max(right - left + 1, 1))
        with torch.inference_mode(), self.precision():
            mask = self.masks[index][0].expand((1, 1, -1, -1))
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)[0][0]
            crop = (mask[y0 - top : y1 - top, x0 - left : x1 - left] > MASK_THRESHOLD).cpu().numpy()
        return x0, y0, crop


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """to_tensor(image) for an HW(C) array, with the same values, holding one float copy of the image
    at a time instead of two (to_tensor divides out of place): 12 bytes per pixel, not 24."""
    if image.ndim == 2:
        image = image[:, :, None]
    tensor = torch.from_numpy(image.transpose((2, 0, 1))).contiguous()
    if tensor.dtype != torch.uint8:
        return tensor  # as to_tensor: only bytes are scaled
    return tensor.to(dtype=torch.get_default_dtype()).div_(255)


def _normalize_owned_in_place(transform: GeneralizedRCNNTransform, owned: list[torch.Tensor]) -> None:
    """Make the transform normalize the predictor's own input tensor in place: the same arithmetic as
    GeneralizedRCNNTransform.normalize, (image - mean) / std elementwise, without the two full-size
    float copies it allocates (24 bytes per pixel: 1 GB for a 40 MP photo). Any other tensor (one a
    user's predict_fn passes) is normalized by torchvision's own method, out of place."""
    original = transform.normalize

    def normalize(image: torch.Tensor) -> torch.Tensor:
        if not any(image is tensor for tensor in owned) or not image.is_floating_point():
            return original(image)
        mean = torch.as_tensor(transform.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(transform.image_std, dtype=image.dtype, device=image.device)
        return image.sub_(mean[:, None, None]).div_(std[:, None, None])

    transform.normalize = normalize


def _keep_mask_probabilities(module: torch.nn.Module, inputs: Any, output: Any) -> None:
    """A forward hook on the roi heads: renames each image's "masks" (N, 1, 28, 28 probabilities)."""
    detections, _ = output
    for detection in detections:
        if "masks" in detection:
            detection[MASK_PROBABILITIES] = detection.pop("masks")


class TorchvisionPredictor:
    input_format = "RGB"

    def __init__(self, model: MaskRCNN, class_names: tuple[str, ...], device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.model.roi_heads.register_forward_hook(_keep_mask_probabilities)
        # The input tensor of the inference running now, which only this predictor holds.
        self._owned: list[torch.Tensor] = []
        _normalize_owned_in_place(self.model.transform, self._owned)
        self.class_names = class_names
        self.device = device

    @property
    def memory_model(self) -> MemoryModel:
        """Memory per request at this model's sizes (the server's memory admission reads it)."""
        transform = self.model.transform
        return replace(
            TORCHVISION_MEMORY,
            min_size=int(max(transform.min_size)),
            max_size=int(transform.max_size),
            max_detections=int(self.model.roi_heads.detections_per_img),
        )

    def runtime_networks(self) -> list[Network]:
        """What CPU_RUNTIME runs instead of torch: the backbone (+ FPN), the RPN head and the mask
        head and predictor. The box head stays in torch (slower in OpenVINO, as detectron2's is),
        as do the transform, anchors, box decoding, NMS, ROIAlign, softmax and thresholds."""
        return torchvision_networks(self.model)

    def __call__(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        if not image.flags.writeable:  # torch warns on tensors viewing read-only memory
            image = image.copy()
        with torch.inference_mode():
            tensor = image_tensor(image).to(self.device)
            self._owned[:] = [tensor]
            try:
                output = self.model([tensor])[0]
            finally:
                self._owned.clear()
            del tensor
        probabilities = output.get(MASK_PROBABILITIES)
        masks = None
        if probabilities is not None:
            paste = TorchvisionMaskPaste(probabilities, output["boxes"], height, width)
            masks = PastedMasks(height, width, len(paste.boxes), paste)
        return Detections(
            image_height=height,
            image_width=width,
            # float32 also under MIXED_PRECISION (autocast may leave half-precision outputs).
            boxes=output["boxes"].float().cpu().numpy(),
            scores=output["scores"].float().cpu().numpy(),
            classes=(output["labels"] - 1).cpu().numpy(),
            masks=masks,
        )


def torchvision_networks(model: MaskRCNN) -> list[Network]:
    backbone = model.backbone
    channels = backbone.out_channels
    # Traced at a small size (the transform pads to multiples of 32): the shapes are dynamic.
    image = torch.zeros(1, 3, 256, 256)
    with torch.no_grad():
        features = type(backbone).forward(backbone, image)
    names = list(features)

    heads = model.roi_heads
    mask_side = heads.mask_roi_pool.output_size[0]
    with torch.no_grad():
        mask_features = heads.mask_head(torch.zeros(2, channels, mask_side, mask_side))
    return [
        backbone_network(backbone, names, image, OrderedDict),
        rpn_head_network(model.rpn.head, tuple(features.values())),
        Network(
            "mask_head",
            Unpatched(heads.mask_head),
            (torch.zeros(2, channels, mask_side, mask_side),),
            ((-1, channels, mask_side, mask_side),),
            replace_method(heads.mask_head),
        ),
        Network(
            "mask_predictor",
            Unpatched(heads.mask_predictor),
            (mask_features,),
            ((-1, mask_features.shape[1], mask_side, mask_side),),
            replace_method(heads.mask_predictor),
        ),
    ]


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
