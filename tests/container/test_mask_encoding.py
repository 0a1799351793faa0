"""The crop encoder on real predictions from each backend: every mask a Mask R-CNN pastes lies within
its box (plus the margin), so it is encoded from the crop, to the bytes of the full-image encoding."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server import mask_encoding
from inference_server.artifact import load_predictor
from tests.container.artifacts import DETECTRON2_MISSING, TEST_IMAGES
from tests.container.image_files import upright_rgb

from .mask_reference import full_image_polygons, full_image_rle


@pytest.fixture(scope="module", params=["torchvision", "detectron2"])
def predictor(request):
    if request.param == "detectron2":
        pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
    return load_predictor(request.getfixturevalue(f"{request.param}_model_dir"))


@pytest.mark.parametrize("photo", TEST_IMAGES, ids=lambda path: path.name)
def test_predicted_masks_encode_from_their_box_crops(photo, predictor):
    rgb = upright_rgb(photo)
    detections = predictor(rgb if predictor.input_format == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1]))
    assert len(detections) > 0 and detections.masks.any()
    for mask, box in zip(detections.masks, detections.boxes, strict=True):
        assert mask_encoding.mask_window(mask, box) is not None, box
        assert mask_encoding.encode_mask_rle(mask, box) == full_image_rle(mask)
        assert mask_encoding.encode_polygons(mask, box) == full_image_polygons(mask)
