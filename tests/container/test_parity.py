"""Over real HTTP, the server returns exactly what the library's own predictor returns.

The server runs in another process on the same CPU with the same torch build, so its numbers are
bit-identical to the in-test call: scores and boxes are compared exactly (JSON carries a float32 as
a Python float, which round-trips without loss), masks as decoded arrays.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image, ImageOps
from pycocotools import mask as mask_util

from tests.container.artifacts import (
    DETECTRON2_MISSING,
    TEST_IMAGES,
    Expected,
    detectron2_reference,
    torchvision_reference,
)
from tests.container.image_files import image_bytes, upright_rgb

PHOTO_IDS = [path.name for path in TEST_IMAGES]


@pytest.fixture(scope="module", params=["torchvision", "detectron2"])
def served(request, start_module_server):
    """(the running server, the library's own predictor) for one test artifact."""
    if request.param == "detectron2":
        pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
        model_dir = request.getfixturevalue("detectron2_model_dir")
        reference = detectron2_reference(model_dir)
    else:
        model_dir = request.getfixturevalue("torchvision_model_dir")
        reference = torchvision_reference(model_dir)
    return start_module_server(model_dir), reference


def assert_response_matches(document: dict, expected: Expected, shape: tuple[int, int]) -> None:
    assert document["image"] == {"height": shape[0], "width": shape[1]}
    instances = document["instances"]
    assert len(instances) == len(expected.scores) > 0
    assert [instance["class_id"] for instance in instances] == expected.classes.tolist()
    np.testing.assert_array_equal(
        np.array([i["score"] for i in instances], dtype=np.float32), expected.scores
    )
    np.testing.assert_array_equal(np.array([i["box"] for i in instances], dtype=np.float32), expected.boxes)
    for instance, expected_mask in zip(instances, expected.masks, strict=True):
        rle = {"size": instance["mask"]["size"], "counts": instance["mask"]["counts"].encode("utf-8")}
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), expected_mask)


@pytest.mark.parametrize("photo", TEST_IMAGES, ids=PHOTO_IDS)
def test_served_photo_equals_the_library_predictor(photo, served):
    server, reference = served

    response = server.invoke(photo.read_bytes(), "image/jpeg")

    assert response.status_code == 200, response.text
    rgb = upright_rgb(photo)  # how PIL decodes the same file
    assert_response_matches(response.json(), reference(rgb), rgb.shape[:2])


@pytest.mark.parametrize("photo", TEST_IMAGES[:1], ids=PHOTO_IDS[:1])
def test_exif_rotated_photo_is_served_upright(photo, served):
    """A camera's file: pixels stored turned, EXIF Orientation 6 saying how to turn them back.

    JPEG re-encoding is lossy, so "upright" means the pixels this file decodes to once turned: the
    same pixels sent as a lossless PNG without EXIF must give the same response, and both must equal
    the library's predictor on them.
    """
    server, reference = served
    rotated_jpeg = image_bytes(upright_rgb(photo), "JPEG", orientation=6, quality=95)
    with Image.open(BytesIO(rotated_jpeg)) as stored:
        assert stored.size[::-1] != upright_rgb(photo).shape[:2]  # really stored sideways
        upright = np.array(ImageOps.exif_transpose(stored).convert("RGB"))

    from_exif = server.invoke(rotated_jpeg, "image/jpeg")
    from_upright_png = server.invoke(image_bytes(upright, "PNG"), "image/png")

    assert from_exif.status_code == from_upright_png.status_code == 200
    assert from_exif.json() == from_upright_png.json()
    assert_response_matches(from_exif.json(), reference(upright), upright.shape[:2])
