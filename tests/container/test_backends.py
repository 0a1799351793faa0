"""Each backend returns what its library returns when called directly on the same image and weights."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server.artifact import load_predictor
from inference_server.backends.base import Detections
from tests.container.artifacts import (
    CLASS_NAMES,
    DETECTRON2_MISSING,
    TEST_IMAGES,
    Expected,
    detectron2_reference,
    torchvision_reference,
)
from tests.container.image_files import upright_rgb


def assert_same_detections(actual: Detections, expected: Expected) -> None:
    """Same process, same weights, same pixels: identical numbers, not merely close ones."""
    assert len(actual) > 0, "the seeded test weights detect something on every photo"
    np.testing.assert_array_equal(actual.boxes, expected.boxes)
    np.testing.assert_array_equal(actual.scores, expected.scores)
    np.testing.assert_array_equal(actual.classes, expected.classes)
    assert (actual.boxes.dtype, actual.scores.dtype, actual.classes.dtype) == (
        np.float32,
        np.float32,
        np.int64,
    )
    assert actual.masks.dtype == bool
    np.testing.assert_array_equal(actual.masks, expected.masks)


@pytest.fixture(scope="module", params=["torchvision", "detectron2"])
def backend(request):
    """(our predictor, the library's own predictor) for one test artifact."""
    if request.param == "detectron2":
        pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
        model_dir = request.getfixturevalue("detectron2_model_dir")
        return load_predictor(model_dir), detectron2_reference(model_dir)
    model_dir = request.getfixturevalue("torchvision_model_dir")
    return load_predictor(model_dir), torchvision_reference(model_dir)


@pytest.mark.parametrize("photo", TEST_IMAGES, ids=lambda path: path.name)
def test_backend_equals_the_library_called_directly(photo, backend):
    predictor, reference = backend
    rgb = upright_rgb(photo)
    image = rgb if predictor.input_format == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1])

    actual = predictor(image)

    assert (actual.image_height, actual.image_width) == rgb.shape[:2]
    assert actual.masks.shape == (len(actual), *rgb.shape[:2])
    assert_same_detections(actual, reference(rgb))


def test_backends_declare_their_channel_order_and_class_names(backend, request):
    predictor, _ = backend
    expected_format = {"torchvision": "RGB", "detectron2": "BGR"}[request.node.callspec.params["backend"]]
    assert predictor.input_format == expected_format  # detectron2's from cfg.INPUT.FORMAT
    assert predictor.class_names == CLASS_NAMES


def test_the_test_photos_are_found():
    assert len(TEST_IMAGES) >= 4
