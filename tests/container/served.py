"""Reading served responses back: the JSON document against a predictor's own arrays."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util


def decode_rle(mask: dict) -> np.ndarray:
    return mask_util.decode({"size": mask["size"], "counts": mask["counts"].encode("utf-8")}).astype(bool)


def assert_served_equals(
    document: dict, expected: dict[str, np.ndarray], class_names, height: int, width: int
):
    assert document["image"] == {"height": height, "width": width}
    instances = document["instances"]
    assert len(instances) == len(expected["scores"]) > 0
    assert [i["class_id"] for i in instances] == expected["classes"].tolist()
    assert [i["class_name"] for i in instances] == [class_names[c] for c in expected["classes"]]
    np.testing.assert_array_equal(np.array([i["score"] for i in instances], np.float32), expected["scores"])
    np.testing.assert_array_equal(np.array([i["box"] for i in instances], np.float32), expected["boxes"])
    for instance, mask in zip(instances, expected["masks"], strict=True):
        np.testing.assert_array_equal(decode_rle(instance["mask"]), mask)


def invoke_ok(server, body: bytes, content_type: str, headers=None) -> dict:
    response = server.invoke(body, content_type, headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()
