"""Codecs as pure functions: every content type, orientation and colour mode, the limits, the options,
and the RLE/polygon encoding round trip through pycocotools."""

from __future__ import annotations

import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from inference_server import content_types, decoding, mask_encoding, request_options, response
from inference_server.backends.base import Detections
from inference_server.errors import (
    ImageTooLarge,
    InvalidInput,
    InvalidOption,
    NotAcceptable,
    UnsupportedMediaType,
)
from inference_server.request_options import MaskFormat, RequestOptions

from .image_files import image_bytes, json_body, noise_image, npy_bytes
from .mask_reference import full_image_polygons, full_image_rle

LIMIT = 10_000_000


def decode(body: bytes, content_type: str, input_format: str = "RGB", max_pixels: int = LIMIT) -> np.ndarray:
    return decoding.decode_image(body, content_type, input_format=input_format, max_pixels=max_pixels)


# --- decoding -------------------------------------------------------------------------------------


def test_every_lossless_content_type_decodes_to_the_same_pixels():
    rgb = noise_image()
    png = image_bytes(rgb)
    bodies = {
        "image/png": png,
        "application/x-image": png,
        "application/x-npy": npy_bytes(rgb),
        "application/json": json_body(png),
    }
    for content_type, body in bodies.items():
        np.testing.assert_array_equal(decode(body, content_type), rgb, err_msg=content_type)


def test_jpeg_decodes_like_pil_and_bgr_reverses_the_channels():
    jpeg = image_bytes(noise_image(), "JPEG", quality=90)
    rgb = decode(jpeg, "image/jpeg")
    np.testing.assert_array_equal(rgb, np.array(Image.open(io.BytesIO(jpeg)).convert("RGB")))
    bgr = decode(jpeg, "image/jpeg", input_format="BGR")
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    assert bgr.flags.c_contiguous and bgr.flags.writeable


def test_content_type_parameters_and_case_are_ignored():
    png = image_bytes(noise_image())
    np.testing.assert_array_equal(decode(png, "Image/PNG; charset=binary"), decode(png, "image/png"))


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(orientation):
    upright = noise_image(40, 64)
    decoded = decode(image_bytes(upright, orientation=orientation), "image/png")
    np.testing.assert_array_equal(decoded, upright)


def test_exif_orientation_is_applied_to_jpeg():
    upright = np.zeros((40, 64, 3), np.uint8)
    upright[:10] = 255  # a white band along the top edge
    decoded = decode(image_bytes(upright, "JPEG", orientation=6, quality=95), "image/jpeg")
    assert decoded.shape == upright.shape
    assert decoded[:10].mean() > 240 and decoded[12:].mean() < 15


def test_grayscale_becomes_three_equal_channels():
    gray = noise_image()[:, :, 0]
    decoded = decode(image_bytes(Image.fromarray(gray, "L")), "image/png")
    np.testing.assert_array_equal(decoded, np.repeat(gray[:, :, None], 3, axis=2))


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    gray16 = (np.arange(64, dtype=np.uint16) * 1024)[None, :].repeat(8, axis=0)
    decoded = decode(image_bytes(Image.fromarray(gray16)), "image/png")
    np.testing.assert_array_equal(decoded[:, :, 1], (gray16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_like_detectron2_read_image(mode):
    rgba = np.dstack([noise_image(), np.random.default_rng(1).integers(0, 256, (48, 64), dtype=np.uint8)])
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    decoded = decode(image_bytes(image), "image/png")
    np.testing.assert_array_equal(decoded, np.array(image.convert("RGB")))


def test_palette_with_transparency_becomes_rgb():
    image = Image.fromarray(noise_image()).quantize(16)
    image.info["transparency"] = 0
    decoded = decode(image_bytes(image, transparency=0), "image/png")
    np.testing.assert_array_equal(decoded, np.array(image.convert("RGB")))


def test_unsupported_content_type_names_the_supported_ones():
    with pytest.raises(
        UnsupportedMediaType, match=r"'image/gif' is not supported; use one of: image/jpeg, image/png"
    ):
        decode(b"GIF89a", "image/gif")
    with pytest.raises(UnsupportedMediaType, match=r"'\(none\)'"):
        decode(b"x", "")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"not an image", "image/jpeg", "body is not a JPEG image"),
        (image_bytes(noise_image()), "image/jpeg", "body is not a JPEG image"),  # a PNG sent as JPEG
        (image_bytes(noise_image(), "JPEG")[:200], "image/jpeg", "image data is corrupt or truncated"),
        (image_bytes(noise_image(), "JPEG")[:-500], "image/jpeg", "image data is corrupt or truncated"),
        (image_bytes(noise_image())[:-50], "image/png", "image data is corrupt or truncated"),
        (b"\x93NUMPY garbage", "application/x-npy", "body is not a .npy array"),
        (
            npy_bytes(noise_image().astype(np.float32)),
            "application/x-npy",
            "HWC uint8 with 3 \\(RGB\\) channels",
        ),
        (npy_bytes(noise_image()[:, :, 0]), "application/x-npy", "got shape \\(48, 64\\)"),
        (
            npy_bytes(np.full((2, 2, 3), None, dtype=object), allow_pickle=True),
            "application/x-npy",
            "dtype object",
        ),
        (npy_bytes(noise_image())[:-10], "application/x-npy", "not a readable .npy array"),
        (b"{not json", "application/json", "body is not valid JSON"),
        (b'{"img": "AAAA"}', "application/json", 'must be \\{"image"'),
        (b'{"image": "AAAA", "extra": 1}', "application/json", "got \\['extra', 'image'\\]"),
        (b'{"image": "***"}', "application/json", '"image" is not valid base64'),
        (json_body(b"not an image"), "application/json", "body is not a JPEG or PNG or WEBP or BMP image"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "JSON nesting is too deep"),
        (b'{"image": ' + b"9" * 5000 + b"}", "application/json", "body is not valid JSON: Exceeds the limit"),
        (npy_bytes(np.zeros((0, 10, 3), np.uint8)), "application/x-npy", "image is 10x0: it has no pixels"),
        (npy_bytes(np.zeros((2, 201, 3), np.uint8)), "application/x-npy", "at most 100 times its shorter"),
        (image_bytes(np.zeros((201, 2, 3), np.uint8)), "image/png", "image is 2x201; its longer side"),
        (b"\x93NUMPY\x01\x00\x0c\x00{'descr': ((", "application/x-npy", "body is not a .npy array"),
    ],
)
def test_undecodable_bodies_say_what_is_wrong(body, content_type, message):
    with pytest.raises(InvalidInput, match=message):
        decode(body, content_type)


def test_thin_images_up_to_the_aspect_ratio_limit_decode():
    assert decode(npy_bytes(np.zeros((2, 200, 3), np.uint8)), "application/x-npy").shape == (2, 200, 3)
    assert decode(image_bytes(np.zeros((1, 1, 3), np.uint8)), "image/png").shape == (1, 1, 3)


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    png = image_bytes(noise_image(100, 100))
    assert decode(png, "image/png", max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(
        ImageTooLarge, match=r"100x100 = 10000 pixels; the limit is 9999 \(MAX_IMAGE_PIXELS\)"
    ):
        decode(png, "image/png", max_pixels=9_999)


def test_npy_pixel_limit_is_checked_before_the_array_is_read():
    # A header promising 50000 x 50000 x 3 bytes, followed by no data: rejected without allocating.
    body = npy_header_only((50000, 50000, 3))
    with pytest.raises(ImageTooLarge, match="50000x50000"):
        decode(body, "application/x-npy")


def npy_header_only(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


# --- options and Accept ------------------------------------------------------------------------------


def test_options_default_when_the_header_is_absent():
    assert request_options.parse_options(None) == RequestOptions(
        score_threshold=0.0, max_detections=None, mask_format=MaskFormat.RLE
    )


def test_options_parse_from_custom_attributes():
    options = request_options.parse_options(" score_threshold=0.7, max_detections=20 ,mask_format=POLYGON")
    assert options == RequestOptions(score_threshold=0.7, max_detections=20, mask_format=MaskFormat.POLYGON)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("score_threshold=1.5", r"score_threshold='1.5' is invalid; allowed: a number in 0..1"),
        ("score_threshold=high", r"score_threshold='high' is invalid"),
        ("max_detections=0", r"max_detections='0' is invalid; allowed: an integer >= 1"),
        ("mask_format=png", r"mask_format='png' is invalid; allowed: rle \| polygon \| none"),
        (
            "score_treshold=0.5",
            r"'score_treshold=0.5' is not supported; allowed: score_threshold \(a number in 0..1\), "
            r"max_detections \(an integer >= 1\), mask_format \(rle \| polygon \| none\)",
        ),
        ("mask_format", r"'mask_format' is not supported"),
        ("max_detections=1,max_detections=2", "'max_detections' is given more than once"),
    ],
)
def test_invalid_options_name_the_option_and_the_allowed_values(header, message):
    with pytest.raises(InvalidOption, match=message):
        request_options.parse_options(header)


@pytest.mark.parametrize(
    "accept", [None, "", "*/*", "application/json", "application/*", "text/html, application/json;q=0.9"]
)
def test_accept_headers_that_allow_json(accept):
    assert content_types.negotiate(accept) == "application/json"


def test_accept_without_json_is_not_acceptable():
    with pytest.raises(
        NotAcceptable, match="Accept 'text/csv' cannot be met; responses are application/json"
    ):
        content_types.negotiate("text/csv")


# --- encoding ----------------------------------------------------------------------------------------


def random_masks(count: int, height: int = 30, width: int = 40, seed: int = 0) -> np.ndarray:
    masks = np.random.default_rng(seed).random((count, height, width)) > 0.6
    masks[0] = False  # an empty mask
    masks[1] = True  # a full one
    return masks


def test_rle_round_trips_exactly_through_pycocotools():
    masks = random_masks(5)
    rles = mask_encoding.encode_rle(masks)
    for mask, rle in zip(masks, rles, strict=True):
        assert rle["size"] == [30, 40] and isinstance(rle["counts"], str)
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("utf-8")})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
    assert mask_encoding.encode_rle(np.zeros((0, 30, 40), bool)) == []


def test_rle_matches_detectron2_per_mask_encoding():
    # detectron2's instances_to_coco_json encodes each mask as
    # mask_util.encode(np.array(mask[:, :, None], order="F", dtype="uint8"))[0]
    masks = random_masks(3)
    expected = [mask_util.encode(np.array(mask[:, :, None], order="F", dtype="uint8"))[0] for mask in masks]
    assert [rle["counts"] for rle in mask_encoding.encode_rle(masks)] == [
        rle["counts"].decode() for rle in expected
    ]


def test_polygons_trace_the_mask_outline():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 8:18] = True
    (polygon,) = mask_encoding.encode_polygons(mask)
    xs, ys = polygon[0::2], polygon[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (8.5, 17.5, 5.5, 9.5)


def make_detections(scores=(0.9, 0.3, 0.6), masks: bool = True) -> Detections:
    count = len(scores)
    return Detections(
        image_height=30,
        image_width=40,
        boxes=np.array([[i, i + 1, i + 10.5, i + 20.25] for i in range(count)], np.float32),
        scores=np.array(scores, np.float32),
        classes=np.array([i % 2 for i in range(count)], np.int64),
        masks=random_masks(count) if masks else None,
    )


def test_document_schema_and_values():
    detections = make_detections()
    document = response.detections_document(detections, ("balloon", "person"), RequestOptions())
    assert document["image"] == {"height": 30, "width": 40}
    assert [i["score"] for i in document["instances"]] == [float(np.float32(s)) for s in (0.9, 0.6, 0.3)]
    first, second, _ = document["instances"]
    assert set(first) == {"class_id", "class_name", "score", "box", "mask"}
    assert (first["class_id"], first["class_name"], first["box"]) == (0, "balloon", [0.0, 1.0, 10.5, 20.25])
    assert (second["class_id"], second["class_name"]) == (0, "balloon")  # index 2 of the detections
    decoded = mask_util.decode({"size": second["mask"]["size"], "counts": second["mask"]["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), detections.masks[2])
    assert json.loads(response.encode_json(document)) == document


def test_threshold_and_max_detections_select_the_best_instances():
    detections = make_detections(scores=(0.9, 0.3, 0.6, 0.8))
    document = response.detections_document(
        detections, ("a", "b"), RequestOptions(score_threshold=0.5, max_detections=2)
    )
    assert [round(i["score"], 2) for i in document["instances"]] == [0.9, 0.8]


def test_mask_formats():
    detections = make_detections()
    without = response.detections_document(
        detections, ("a", "b"), RequestOptions(mask_format=MaskFormat.NONE)
    )
    assert all("mask" not in i and "polygons" not in i for i in without["instances"])
    polygons = response.detections_document(
        detections, ("a", "b"), RequestOptions(mask_format=MaskFormat.POLYGON)
    )
    assert [bool(i["polygons"]) for i in polygons["instances"]] == [
        False,
        True,
        True,
    ]  # the empty mask has none
    no_mask_head = response.detections_document(make_detections(masks=False), ("a", "b"), RequestOptions())
    assert all("mask" not in i for i in no_mask_head["instances"])


def test_unknown_class_ids_have_no_name():
    document = response.detections_document(make_detections(), ("only",), RequestOptions())
    assert [i["class_name"] for i in document["instances"]] == ["only", "only", None]


# --- encoding from box crops -------------------------------------------------------------------------


def pasted_masks(count: int, height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks as a Mask R-CNN pastes them: random blobs confined to the pixels of a fractional box."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, height, width), bool)
    boxes = np.zeros((count, 4), np.float32)
    for i in range(count):
        x0, x1 = sorted(rng.uniform(-5, width + 5, 2))
        y0, y1 = sorted(rng.uniform(-5, height + 5, 2))
        boxes[i] = (x0, y0, x1, y1)
        # Pixels whose centres lie in the box (detectron2's paste), filled at a random density.
        rows = (np.arange(height) + 0.5 >= y0) & (np.arange(height) + 0.5 <= y1)
        cols = (np.arange(width) + 0.5 >= x0) & (np.arange(width) + 0.5 <= x1)
        masks[i] = rows[:, None] & cols[None, :] & (rng.random((height, width)) < rng.uniform(0.2, 1.0))
    return masks, boxes


def assert_crop_encodes_like_the_full_image(mask: np.ndarray, box, *, from_crop: bool) -> None:
    assert (mask_encoding.mask_window(mask, box) is not None) == from_crop
    assert mask_encoding.encode_mask_rle(mask, box) == full_image_rle(mask)
    assert mask_encoding.encode_polygons(mask, box) == full_image_polygons(mask)


@pytest.mark.parametrize("seed", range(6))
def test_masks_inside_fractional_boxes_encode_from_the_crop_to_the_full_image_bytes(seed):
    masks, boxes = pasted_masks(40, 37, 53, seed)
    for mask, box in zip(masks, boxes, strict=True):
        assert_crop_encodes_like_the_full_image(mask, box, from_crop=True)
    assert mask_encoding.encode_rle(masks, boxes) == [full_image_rle(mask) for mask in masks]


def test_crop_encoding_of_a_real_photo_sized_mask_stack():
    masks, boxes = pasted_masks(25, 686, 1024, seed=7)
    assert all(
        mask_encoding.mask_window(mask, box) is not None for mask, box in zip(masks, boxes, strict=True)
    )
    assert mask_encoding.encode_rle(masks, boxes) == mask_encoding.encode_rle(masks)
    assert mask_encoding.encode_rle(masks) == [full_image_rle(mask) for mask in masks]


def box_mask(height: int, width: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize(
    ("mask", "box"),
    [
        # Whole columns, top to bottom: a run of ones continues from one column into the next.
        (box_mask(20, 30, 0, 20, 5, 12), (5, 0, 12, 20)),
        (box_mask(20, 30, 0, 20, 0, 30), (0, 0, 30, 20)),  # every pixel
        (box_mask(20, 30, 0, 3, 0, 4), (0, 0, 4, 3)),  # the top-left corner
        (box_mask(20, 30, 17, 20, 26, 30), (26, 17, 30, 20)),  # the bottom-right corner: ends with the image
        (box_mask(20, 30, 19, 20, 0, 30), (0, 19.2, 30, 19.8)),  # the last row, a box thinner than a pixel
        (box_mask(1, 1, 0, 1, 0, 1), (0, 0, 1, 1)),  # a one-pixel image
        (box_mask(1, 9, 0, 1, 2, 7), (2, 0, 7, 1)),  # a one-row image
        (box_mask(20, 30, 5, 9, 7, 8), (7.4, 5.1, 7.6, 8.9)),  # one column
        (box_mask(20, 30, 0, 20, 0, 30), (-40, -40, 90, 90)),  # a box larger than the image
        # The box's own edges, within the margin a paste may spill over.
        (box_mask(20, 30, 3, 12, 4, 15), (6, 5, 13, 10)),
    ],
)
def test_masks_touching_image_and_box_edges_encode_from_the_crop(mask, box):
    assert_crop_encodes_like_the_full_image(mask, box, from_crop=True)


@pytest.mark.parametrize(
    "box",
    [(3.5, 4.5, 9.5, 8.5), (0, 0, 0, 0), (12, 12, 12, 12), (-50, -50, -10, -10), (100, 100, 200, 200)],
)
def test_empty_masks_encode_from_any_box(box):
    assert_crop_encodes_like_the_full_image(np.zeros((20, 30), bool), box, from_crop=True)


@pytest.mark.parametrize(
    ("mask", "box"),
    [
        (box_mask(20, 30, 3, 12, 4, 15), (7, 6, 12, 9)),  # spills past the box by more than the margin
        (box_mask(20, 30, 0, 20, 0, 30), (5, 5, 10, 10)),  # a custom predict_fn's full-image mask
        (box_mask(20, 30, 2, 4, 2, 4) | box_mask(20, 30, 15, 17, 25, 27), (1, 1, 5, 5)),  # a far island
        (box_mask(20, 30, 2, 6, 2, 6), (float("nan"), 0, 10, 10)),  # a box that is no box
        (box_mask(20, 30, 2, 6, 2, 6), (10, 10, 0, 0)),  # corners swapped
        (box_mask(20, 30, 2, 6, 2, 6), (-np.inf, 0, np.inf, 30)),
    ],
)
def test_masks_outside_their_box_fall_back_to_the_full_image(mask, box):
    assert_crop_encodes_like_the_full_image(mask, box, from_crop=False)


def test_masks_that_are_not_boolean_are_encoded_as_before():
    """A custom predict_fn may return uint8 or float masks: cast to uint8 over the full image, as the
    encoder always did (pycocotools then starts a run at every change of value)."""
    scaled = box_mask(20, 30, 2, 8, 3, 9).astype(np.uint8) * 2
    probabilities = box_mask(20, 30, 2, 8, 3, 9) * np.float32(0.99) + box_mask(20, 30, 4, 5, 4, 5)
    for mask in (scaled, probabilities):
        assert mask_encoding.mask_window(mask, (3, 2, 9, 8)) is None
        assert mask_encoding.encode_mask_rle(mask, (3, 2, 9, 8)) == full_image_rle(mask)


def test_the_document_encodes_each_mask_from_its_box():
    masks, boxes = pasted_masks(6, 30, 40, seed=3)
    detections = Detections(
        image_height=30,
        image_width=40,
        boxes=boxes,
        scores=np.linspace(0.9, 0.4, 6, dtype=np.float32),
        classes=np.zeros(6, np.int64),
        masks=masks,
    )
    document = response.detections_document(detections, ("a",), RequestOptions())
    assert [i["mask"] for i in document["instances"]] == [full_image_rle(mask) for mask in masks]
    as_polygons = response.detections_document(
        detections, ("a",), RequestOptions(mask_format=MaskFormat.POLYGON)
    )
    assert [i["polygons"] for i in as_polygons["instances"]] == [full_image_polygons(mask) for mask in masks]
