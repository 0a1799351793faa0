"""Real model artifacts for the container tests, built through the packaging code and extracted.

Weights are random but seeded, so every run serves the same predictions. Import the fixtures into
a conftest (`from tests.container.artifacts import torchvision_model_dir, detectron2_model_dir`).
Each builder returns the extracted model directory; the tarball sits next to it as model.tar.gz.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from inference_server import artifact, artifact_format, package
from inference_server.artifact_format import ArtifactMetadata, TorchvisionOptions

# Real photos kept in the repository (source and license in its README.md), so a plain clone runs.
TEST_IMAGES_DIR = Path(__file__).resolve().parents[1] / "data" / "images"
TEST_IMAGES = sorted(TEST_IMAGES_DIR.glob("*.jpg"))
if not TEST_IMAGES:
    # Say so at collection instead of a StopIteration or silently empty parameter sets.
    raise RuntimeError(f"no test photos in {TEST_IMAGES_DIR}: the checkout is incomplete")
CLASS_NAMES = ("balloon", "person")
DETECTRON2_MISSING = "detectron2 is not installed: build it from source (see README) to run these tests"
DETECTRON2_ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


def package_and_extract(dest: Path, **build_args) -> Path:
    tarball = package.build_artifact(dest / "model.tar.gz", **build_args)
    return artifact.extract(tarball, dest / "model")


def build_torchvision_artifact(
    dest: Path,
    *,
    seed: int = 0,
    class_names: Sequence[str] = CLASS_NAMES,
    # Small test-time sizes and few detections keep a 2-core CPU near 1 s per photo.
    min_size: int = 320,
    max_size: int = 512,
    score_threshold: float = 0.05,
    detections_per_image: int = 10,
    architecture: str = "maskrcnn_resnet50_fpn",
    code: Path | None = None,
) -> Path:
    """torchvision Mask R-CNN with seeded random weights, saved as a bare state dict as users do."""
    from inference_server.backends.torchvision import build_model

    dest.mkdir(parents=True, exist_ok=True)
    options = TorchvisionOptions(
        architecture=architecture,
        min_size=min_size,
        max_size=max_size,
        score_threshold=score_threshold,
        detections_per_image=detections_per_image,
    )
    torch.manual_seed(seed)
    model = build_model(
        ArtifactMetadata(backend="torchvision", class_names=tuple(class_names), torchvision=options)
    )
    weights = dest / "weights.pth"
    torch.save(model.state_dict(), weights)
    return package_and_extract(
        dest,
        backend="torchvision",
        class_names=class_names,
        weights=weights,
        code=code,
        torchvision_options=options,
    )


def write_detectron2_training_output(
    training_dir: Path,
    *,
    seed: int = 0,
    num_classes: int = len(CLASS_NAMES),
    min_size: int = 320,
    max_size: int = 512,
    score_threshold: float = 0.05,
    detections_per_image: int = 10,
) -> Path:
    """What detectron2 training leaves in OUTPUT_DIR: config.yaml and model_final.pth (random weights).

    The model-zoo config ships inside the detectron2 package, so nothing is downloaded. Its caffe2
    PIXEL_STD of 1 feeds raw pixels to random weights, whose activations then blow up until every
    box is degenerate; the unit-scale std of detectron2's newer baselines keeps random weights
    detecting varied boxes and masks at the stock 0.05 score threshold.
    """
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    training_dir.mkdir(parents=True, exist_ok=True)
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(DETECTRON2_ZOO_CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""  # the zoo config names ImageNet weights by URL; training replaced them
    cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
    cfg.TEST.DETECTIONS_PER_IMAGE = detections_per_image
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.MAX_SIZE_TEST = max_size
    cfg.OUTPUT_DIR = str(training_dir)
    torch.manual_seed(seed)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(training_dir)).save("model_final", iteration=0)
    (training_dir / "config.yaml").write_text(cfg.dump())
    return training_dir


def build_detectron2_artifact(
    dest: Path, *, seed: int = 0, class_names: Sequence[str] = CLASS_NAMES, code: Path | None = None, **config
) -> Path:
    """detectron2 R50-FPN Mask R-CNN (model-zoo config) with seeded random weights, packaged from
    its training directory exactly as a user would; **config goes to write_detectron2_training_output."""
    dest.mkdir(parents=True, exist_ok=True)
    training_dir = write_detectron2_training_output(
        dest / "output", seed=seed, num_classes=len(class_names), **config
    )
    weights = training_dir / "model_final.pth"
    return package_and_extract(
        dest,
        backend="detectron2",
        class_names=class_names,
        weights=weights,
        config=training_dir / "config.yaml",
        code=code,
    )


@dataclass(frozen=True)
class Expected:
    """What a library's own predictor returned, as arrays in our class-id convention."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray


def torchvision_reference(model_dir: Path) -> Callable[[np.ndarray], Expected]:
    """torchvision's own Mask R-CNN, built from its constructor and the artifact's state dict
    (not through our backend), called as torchvision documents: a list of to_tensor(RGB) images."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
    from torchvision.transforms.functional import to_tensor

    metadata = artifact.read_metadata(model_dir)
    options = metadata.torchvision
    constructor = {
        "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn,
        "maskrcnn_resnet50_fpn_v2": maskrcnn_resnet50_fpn_v2,
    }
    model = constructor[options.architecture](
        weights=None,
        weights_backbone=None,
        num_classes=len(metadata.class_names) + 1,
        min_size=options.min_size,
        max_size=options.max_size,
        box_score_thresh=options.score_threshold,
        box_detections_per_img=options.detections_per_image,
    )
    model.load_state_dict(torch.load(model_dir / artifact_format.WEIGHTS_FILE, weights_only=True)["model"])
    model.eval()

    def predict(rgb: np.ndarray) -> Expected:
        with torch.no_grad():
            output = model([to_tensor(rgb.copy())])[0]
        return Expected(
            boxes=output["boxes"].numpy(),
            scores=output["scores"].numpy(),
            classes=output["labels"].numpy() - 1,  # torchvision's label 0 is the background
            masks=output["masks"][:, 0].numpy() > 0.5,
        )

    return predict


def detectron2_reference(model_dir: Path) -> Callable[[np.ndarray], Expected]:
    """detectron2's DefaultPredictor on the artifact's config and weights; it takes BGR pixels."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    cfg = get_cfg()
    cfg.merge_from_file(str(model_dir / artifact_format.CONFIG_FILE))
    cfg.MODEL.WEIGHTS = str(model_dir / artifact_format.WEIGHTS_FILE)
    cfg.MODEL.DEVICE = "cpu"
    default_predictor = DefaultPredictor(cfg)

    def predict(rgb: np.ndarray) -> Expected:
        instances = default_predictor(np.ascontiguousarray(rgb[:, :, ::-1]))["instances"].to("cpu")
        return Expected(
            boxes=instances.pred_boxes.tensor.numpy(),
            scores=instances.scores.numpy(),
            classes=instances.pred_classes.numpy(),
            masks=instances.pred_masks.numpy(),
        )

    return predict


def hide_detectron2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import detectron2` fail as on a host without it, whether or not it is installed."""
    for name in list(sys.modules):
        if name.split(".")[0] == "detectron2" or name == "inference_server.backends.detectron2":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "detectron2", None)  # None makes its import raise


@pytest.fixture(scope="session")
def torchvision_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_torchvision_artifact(tmp_path_factory.mktemp("torchvision-artifact"))


@pytest.fixture(scope="session")
def detectron2_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
    return build_detectron2_artifact(tmp_path_factory.mktemp("detectron2-artifact"))
