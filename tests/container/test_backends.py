"""Each backend returns what its library returns when called directly on the same image and weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference_server.artifact import WEIGHTS_FILE, load_predictor, read_metadata
from tests.container.artifacts import DETECTRON2_MISSING, TEST_IMAGES


def rgb_image(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_detections_equal(actual, boxes, scores, classes, masks) -> None:
    """Same process, same weights, same input: the numbers must be identical, not merely close."""
    assert len(actual) > 0, "random test weights are expected to detect something on every photo"
    np.testing.assert_array_equal(actual.boxes, boxes)
    np.testing.assert_array_equal(actual.scores, scores)
    np.testing.assert_array_equal(actual.classes, classes)
    assert actual.classes.dtype == np.int64
    assert actual.masks.dtype == bool
    np.testing.assert_array_equal(actual.masks, masks)


@pytest.fixture(scope="module")
def torchvision_predictor(torchvision_model_dir):
    return load_predictor(torchvision_model_dir)


@pytest.fixture(scope="module")
def torchvision_reference(torchvision_model_dir):
    """torchvision's own model, built from the constructor arguments, not from our backend."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    metadata = read_metadata(torchvision_model_dir)
    options = metadata.torchvision
    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=len(metadata.class_names) + 1,
        min_size=options.min_size,
        max_size=options.max_size,
        box_score_thresh=options.score_threshold,
        box_detections_per_img=options.detections_per_image,
    )
    model.load_state_dict(torch.load(torchvision_model_dir / WEIGHTS_FILE, weights_only=True)["model"])
    return model.eval()


@pytest.mark.parametrize("photo", TEST_IMAGES, ids=lambda path: path.name)
def test_torchvision_backend_equals_calling_the_model_directly(photo, torchvision_predictor, torchvision_reference):
    from torchvision.transforms.functional import to_tensor

    image = rgb_image(photo)
    with torch.no_grad():
        expected = torchvision_reference([to_tensor(image)])[0]

    actual = torchvision_predictor(image)

    assert (actual.image_height, actual.image_width) == image.shape[:2]
    assert_detections_equal(
        actual,
        boxes=expected["boxes"].numpy(),
        scores=expected["scores"].numpy(),
        classes=expected["labels"].numpy() - 1,  # torchvision's label 0 is the background
        masks=expected["masks"][:, 0].numpy() > 0.5,
    )


def test_torchvision_backend_declares_rgb_and_the_artifact_class_names(torchvision_predictor):
    assert torchvision_predictor.input_format == "RGB"
    assert torchvision_predictor.class_names == ("balloon", "person")


@pytest.fixture(scope="module")
def detectron2_predictors(detectron2_model_dir):
    """(our backend, detectron2's DefaultPredictor) on the same artifact config and weights."""
    pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    cfg = get_cfg()
    cfg.merge_from_file(str(detectron2_model_dir / "config.yaml"))
    cfg.MODEL.WEIGHTS = str(detectron2_model_dir / WEIGHTS_FILE)
    cfg.MODEL.DEVICE = "cpu"
    return load_predictor(detectron2_model_dir), DefaultPredictor(cfg)


@pytest.mark.parametrize("photo", TEST_IMAGES, ids=lambda path: path.name)
def test_detectron2_backend_equals_default_predictor(photo, detectron2_predictors):
    predictor, default_predictor = detectron2_predictors
    bgr = np.ascontiguousarray(rgb_image(photo)[:, :, ::-1])
    expected = default_predictor(bgr)["instances"].to("cpu")

    actual = predictor(bgr)

    assert (actual.image_height, actual.image_width) == bgr.shape[:2]
    assert_detections_equal(
        actual,
        boxes=expected.pred_boxes.tensor.numpy(),
        scores=expected.scores.numpy(),
        classes=expected.pred_classes.numpy(),
        masks=expected.pred_masks.numpy(),
    )


def test_detectron2_backend_takes_the_config_input_format(detectron2_predictors):
    predictor, default_predictor = detectron2_predictors
    assert predictor.input_format == default_predictor.input_format == "BGR"
    assert predictor.class_names == ("balloon", "person")
