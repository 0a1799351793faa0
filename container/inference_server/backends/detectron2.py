"""detectron2 behind the Predictor interface, computing exactly what DefaultPredictor computes.

It keeps DefaultPredictor's state (cloned cfg, build_model, eval(), checkpoint load, the test-time
ResizeShortestEdge, INPUT.FORMAT) but differs where serving needs it: weights come only from the
artifact (a URL in MODEL.WEIGHTS would download under network isolation), weights that leave model
parameters unset are refused instead of logged, the caller hands over the image already in
INPUT.FORMAT order, so no channel flip happens here, and masks are not pasted into N full-size
images: detector_postprocess runs on everything else, and each mask is pasted into its box region
when it is read (inference_server.masks), by the function detectron2's CPU paste itself calls.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.layers.mask_ops import _do_paste_mask
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.proposal_generator.rpn import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import MaskRCNNConvUpsampleHead, StandardROIHeads
from detectron2.structures import Instances

from inference_server.artifact_format import CONFIG_FILE, WEIGHTS_FILE, ArtifactError, ArtifactMetadata
from inference_server.backends.base import Detections, describe_mismatch, require_file
from inference_server.cpu_runtime import (
    Network,
    Unpatched,
    backbone_network,
    replace_method,
    rpn_head_network,
)
from inference_server.errors import first_line
from inference_server.masks import Crop, PastedMasks, autocast_context
from inference_server.memory import DETECTRON2_MEMORY, MemoryModel

# detectron2's default mask threshold (detector_postprocess, paste_masks_in_image): a pixel is in
# the mask when its pasted probability is >= this.
MASK_THRESHOLD = 0.5
# Where the 28x28 mask probabilities travel through detector_postprocess instead of pred_masks, so
# that it filters them with the boxes but pastes nothing.
MASK_PROBABILITIES = "pred_mask_probabilities"


class StrictCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that raises where the stock one logs a warning and serves random weights."""

    def _load_model(self, checkpoint):  # the hook DetectionCheckpointer itself overrides
        incompatible = super()._load_model(checkpoint)
        if incompatible.missing_keys:  # mis-shaped weights are dropped, so they are missing too
            raise ArtifactError(
                describe_mismatch(incompatible.missing_keys, incompatible.incorrect_shapes, self.path)
            )
        return incompatible

    def load_weights(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"{path} does not exist")
        try:
            self.load(str(path))
        except ArtifactError:
            raise
        except Exception as error:  # torch.load / pickle raise many types for corrupt files
            raise ArtifactError(f"{path} is not a detectron2 checkpoint: {first_line(error)}") from None


def read_config(path: Path) -> CfgNode:
    """A detectron2 yacs config (LazyConfig .py files are not supported)."""
    cfg = get_cfg()
    try:
        cfg.merge_from_file(str(path))
    except Exception as error:  # yacs raises KeyError/ValueError/AssertionError; YAML its own
        raise ArtifactError(
            f"{path} is not a detectron2 config this detectron2 can load: {first_line(error)}"
        ) from None
    if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
        raise ArtifactError(f"{path}: INPUT.FORMAT must be BGR or RGB, not {cfg.INPUT.FORMAT!r}")
    return cfg


def check_class_names(cfg: CfgNode, metadata: ArtifactMetadata, config_path: Path) -> None:
    key = "RETINANET" if cfg.MODEL.META_ARCHITECTURE == "RetinaNet" else "ROI_HEADS"
    num_classes = cfg.MODEL[key].NUM_CLASSES
    if num_classes != metadata.num_classes:
        raise ArtifactError(
            f"{config_path} has MODEL.{key}.NUM_CLASSES {num_classes} but {metadata.num_classes} class "
            f"names were given ({', '.join(metadata.class_names)})"
        )


class Detectron2MaskPaste:
    """paste_masks_in_image for one mask at a time, returning only the region it writes.

    On CPU, paste_masks_in_image pastes one mask at a time with _do_paste_mask(skip_empty=True) and
    writes the region it returns; this calls the same function on the same tensors, so the crop
    holds the same pixels. (On GPU detectron2 samples the whole image at once; the sampled value of
    a pixel does not depend on the grid it is part of, and outside the region none reaches 0.5.)
    """

    def __init__(self, probabilities: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> None:
        self.probabilities = probabilities  # (N, M, M) on the model's device
        self.boxes = boxes  # (N, 4) in image pixels, as detector_postprocess left them
        self.height, self.width = height, width
        self.precision = autocast_context()

    def __call__(self, index: int) -> Crop:
        with torch.inference_mode(), self.precision():
            pasted, (rows, columns) = _do_paste_mask(
                self.probabilities[index : index + 1, None],
                self.boxes[index : index + 1],
                self.height,
                self.width,
                skip_empty=True,
            )
            crop = (pasted[0] >= MASK_THRESHOLD).cpu().numpy()
        return int(columns.start), int(rows.start), crop


def to_detections(instances: Instances) -> Detections:
    """CPU arrays in original-image pixels, as detectron2's instances_to_coco_json reads them."""
    height, width = instances.image_size
    masks = None
    if instances.has(MASK_PROBABILITIES):
        masks = PastedMasks(
            height,
            width,
            len(instances),
            Detectron2MaskPaste(
                instances.get(MASK_PROBABILITIES)[:, 0], instances.pred_boxes.tensor, height, width
            ),
        )
        instances.remove(MASK_PROBABILITIES)
    instances = instances.to("cpu")
    if masks is None and instances.has("pred_masks"):
        masks = instances.pred_masks.numpy().astype(bool, copy=False)
    return Detections(
        image_height=height,
        image_width=width,
        # float32 also under MIXED_PRECISION (autocast may leave half-precision outputs).
        boxes=instances.pred_boxes.tensor.float().numpy(),
        scores=instances.scores.float().numpy(),
        classes=instances.pred_classes.numpy().astype(np.int64, copy=False),
        masks=masks,
    )


class Detectron2Predictor:
    def __init__(self, cfg: CfgNode, class_names: tuple[str, ...]) -> None:
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        StrictCheckpointer(self.model).load_weights(Path(self.cfg.MODEL.WEIGHTS))
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        self.class_names = class_names

    @property
    def memory_model(self) -> MemoryModel:
        """Memory per request at this model's sizes (the server's memory admission reads it)."""
        return replace(
            DETECTRON2_MEMORY,
            min_size=int(self.cfg.INPUT.MIN_SIZE_TEST),
            max_size=int(self.cfg.INPUT.MAX_SIZE_TEST),
            max_detections=int(self.cfg.TEST.DETECTIONS_PER_IMAGE),
        )

    def runtime_networks(self) -> list[Network]:
        """What CPU_RUNTIME runs instead of torch: the backbone (+ FPN), and where the model has the
        stock ones, the RPN head and the mask head's convolutions. The box head stays in torch (its
        fully connected layers over 1,000 proposals ran slower in OpenVINO than in torch's GEMM: a
        placement probe gave the whole model 1.67x at fp32 with it in torch, 1.54x without), as do
        proposal decoding, NMS, ROIAlign, the box predictor's softmax and the thresholds."""
        return detectron2_networks(self.model, self.cfg)

    def __call__(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        with torch.inference_mode():
            resized = self.aug.get_transform(image).apply_image(image)
            tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)).to(self.cfg.MODEL.DEVICE)
            inputs = [{"image": tensor, "height": height, "width": width}]
            if not isinstance(self.model, GeneralizedRCNN):
                return to_detections(self.model(inputs)[0]["instances"])
            # What model(inputs) does (GeneralizedRCNN.inference, then detector_postprocess), with the
            # masks moved aside so that detector_postprocess leaves them unpasted.
            instances = self.model.inference(inputs, do_postprocess=False)[0]
            if instances.has("pred_masks"):
                instances.set(MASK_PROBABILITIES, instances.pred_masks)
                instances.remove("pred_masks")
            return to_detections(detector_postprocess(instances, height, width))


def detectron2_networks(model: torch.nn.Module, cfg: CfgNode) -> list[Network]:
    backbone: Any = model.backbone  # a detectron2 Backbone (output_shape, size_divisibility)
    names = list(backbone.output_shape())
    channels = backbone.output_shape()[names[0]].channels
    # Traced at a small size, any multiple of the backbone's size_divisibility: the shapes are dynamic.
    side = max(backbone.size_divisibility, 32) * 8
    image = torch.zeros(1, 3, side, side)

    networks = [backbone_network(backbone, names, image)]
    generator = getattr(model, "proposal_generator", None)
    if isinstance(generator, RPN) and isinstance(generator.rpn_head, StandardRPNHead):
        levels = generator.in_features
        with torch.no_grad():
            features = Unpatched(backbone, flatten=lambda found: tuple(found[name] for name in levels))(image)
        networks.append(rpn_head_network(generator.rpn_head, features))
    heads = getattr(model, "roi_heads", None)
    if isinstance(heads, StandardROIHeads) and isinstance(
        getattr(heads, "mask_head", None), MaskRCNNConvUpsampleHead
    ):
        side = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        networks.append(
            Network(
                "mask_head",
                # forward() calls self.layers() and then mask_rcnn_inference, which stays in torch.
                Unpatched(heads.mask_head, method="layers"),
                (torch.zeros(2, channels, side, side),),
                ((-1, channels, side, side),),
                replace_method(heads.mask_head, "layers"),
            )
        )
    return networks


def load(model_dir: Path, metadata: ArtifactMetadata) -> Detectron2Predictor:
    config_path = require_file(model_dir, CONFIG_FILE)
    cfg = read_config(config_path)
    check_class_names(cfg, metadata, config_path)
    cfg.MODEL.WEIGHTS = str(require_file(model_dir, WEIGHTS_FILE))
    # The loading thread's current GPU: one model copy per GPU, each loaded by its own thread.
    cfg.MODEL.DEVICE = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    cfg.freeze()
    return Detectron2Predictor(cfg, metadata.class_names)


def export(metadata: ArtifactMetadata, weights: Path, config: Path | None, staging_dir: Path) -> None:
    """Write config.yaml (flattened: no _BASE_) and the weights (model state dict only)."""
    if config is None:
        raise ArtifactError("a detectron2 artifact needs --config (the config.yaml written by training)")
    cfg = read_config(config)
    check_class_names(cfg, metadata, config)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    StrictCheckpointer(model).load_weights(weights)
    torch.save({"model": model.state_dict()}, Path(staging_dir) / WEIGHTS_FILE)
    # Informational only: load() always points MODEL.WEIGHTS at the bundled file.
    cfg.MODEL.WEIGHTS = WEIGHTS_FILE
    (Path(staging_dir) / CONFIG_FILE).write_text(cfg.dump())
