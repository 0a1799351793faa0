"""The real server on a real detectron2 artifact serves exactly what detectron2's DefaultPredictor
returns for the same file. Skips when detectron2 is not installed (it builds only from source)."""

from __future__ import annotations

import pytest

from inference_server import artifact

from .artifacts import TEST_IMAGES
from .served import assert_served_equals, invoke_ok


@pytest.fixture(scope="module")
def server(start_module_server, detectron2_model_dir):
    return start_module_server(detectron2_model_dir)


@pytest.fixture(scope="module")
def default_predictor(detectron2_model_dir):
    """detectron2's own demo predictor, configured from the artifact's config and weights."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    cfg = get_cfg()
    cfg.merge_from_file(str(detectron2_model_dir / artifact.CONFIG_FILE))
    cfg.MODEL.WEIGHTS = str(detectron2_model_dir / artifact.WEIGHTS_FILE)
    cfg.MODEL.DEVICE = "cpu"
    return DefaultPredictor(cfg), artifact.read_metadata(detectron2_model_dir).class_names


@pytest.mark.parametrize("photo", TEST_IMAGES, ids=lambda path: path.name)
def test_served_photo_equals_default_predictor(server, default_predictor, photo):
    from detectron2.data.detection_utils import read_image

    predictor, class_names = default_predictor
    bgr = read_image(
        str(photo), format="BGR"
    )  # detectron2's own reader: EXIF applied, BGR as the model expects
    instances = predictor(bgr)["instances"].to("cpu")
    expected = {
        "classes": instances.pred_classes.numpy(),
        "scores": instances.scores.numpy(),
        "boxes": instances.pred_boxes.tensor.numpy(),
        "masks": instances.pred_masks.numpy(),
    }
    document = invoke_ok(server, photo.read_bytes(), "image/jpeg")
    assert_served_equals(document, expected, class_names, *bgr.shape[:2])
