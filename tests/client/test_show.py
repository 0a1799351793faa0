"""`d2sm show`: the PNG is decoded and checked pixel by pixel against the input and the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from d2sm.show import MASK_OPACITY, PALETTE

from .helpers import d2sm, detections, error_object, photo


def result_beside(image: Path, document: dict) -> Path:
    path = image.with_name(image.name + ".json")
    path.write_text(json.dumps(document))
    return path


def decoded_masks(document: dict) -> list[np.ndarray]:
    return [
        mask_util.decode({"size": i["mask"]["size"], "counts": i["mask"]["counts"].encode()}).astype(bool)
        for i in document["instances"]
    ]


def test_overlay_tints_masks_draws_boxes_and_labels(tmp_path, capsys):
    image = photo(tmp_path / "photo.jpg", size=(320, 240))
    document = detections(320, 240)
    result = result_beside(image, document)

    run = d2sm(capsys, "show", result)

    assert run.code == 0, run.err
    overlay_path = tmp_path / "photo.jpg.overlay.png"
    assert run.out == f"{overlay_path}: 2 instance(s)\n"
    overlay = Image.open(overlay_path)
    assert overlay.format == "PNG" and overlay.size == (320, 240) and overlay.mode == "RGB"
    drawn = np.asarray(overlay).astype(int)
    original = np.asarray(Image.open(image).convert("RGB")).astype(int)
    masks = decoded_masks(document)
    boxes_and_labels = np.zeros(masks[0].shape, bool)
    for index, instance in enumerate(document["instances"]):
        x1, y1, x2, y2 = (round(v) for v in instance["box"])
        boxes_and_labels[max(0, y1 - 30) : y2 + 4, max(0, x1 - 4) : x2 + 4] = True
        colour = np.array(PALETTE[index])
        # Mask pixels away from the outline and label: exactly the blend of the photo and the colour.
        inner = masks[index].copy()
        inner[: y1 + 30, :] = inner[y2 - 4 :, :] = False
        inner[:, : x1 + 5] = inner[:, x2 - 4 :] = False
        expected = np.round((1 - MASK_OPACITY) * original[inner] + MASK_OPACITY * colour)
        assert inner.sum() > 500
        assert np.abs(drawn[inner] - expected).max() <= 1
        # The box outline: its left edge at mid-height is the instance's colour.
        assert (drawn[(y1 + y2) // 2, x1] == colour).all()
        assert (drawn[y2, (x1 + x2) // 2] == colour).all()
        # The label sits on a colour strip above the box, with white text in it.
        label = drawn[max(0, y1 - 20) : y1, x1 : x1 + 60]
        assert (label == colour).all(axis=-1).sum() > 100
        assert (label > 220).all(axis=-1).sum() > 10
    # Everything outside masks, boxes and labels is the photo, untouched.
    untouched = ~(masks[0] | masks[1] | boxes_and_labels)
    assert untouched.sum() > 10000
    assert (drawn[untouched] == original[untouched]).all()


def test_folder_writes_one_overlay_per_image_with_a_result(tmp_path, capsys):
    with_result = [photo(tmp_path / f"{name}", seed=i) for i, name in enumerate(["a.jpg", "b.png"])]
    for image in with_result:
        result_beside(image, detections())
    photo(tmp_path / "no-result.jpg")

    run = d2sm(capsys, "show", tmp_path)

    assert run.code == 0, run.err
    assert sorted(p.name for p in tmp_path.glob("*.overlay.png")) == [
        "a.jpg.overlay.png",
        "b.png.overlay.png",
    ]
    assert run.out.endswith("2 overlay(s) written\n")
    # A second run does not take its own overlays for photos.
    assert d2sm(capsys, "show", tmp_path).code == 0
    assert len(list(tmp_path.glob("*.overlay.png"))) == 2


def test_polygons_are_filled_like_masks(tmp_path, capsys):
    image = photo(tmp_path / "p.png")
    square = [40.0, 40.0, 80.0, 40.0, 80.0, 80.0, 40.0, 80.0]
    document = {
        "image": {"height": 120, "width": 160},
        "instances": [
            {
                "class_id": 0,
                "class_name": "balloon",
                "score": 0.9,
                "box": [40, 40, 80, 80],
                "polygons": [square],
            }
        ],
    }
    result_beside(image, document)
    assert d2sm(capsys, "show", tmp_path / "p.png.json", "--output", tmp_path / "out.png").code == 0
    drawn = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    original = np.asarray(Image.open(image).convert("RGB")).astype(int)
    assert (drawn[60, 60] != original[60, 60]).any() and (drawn[100, 140] == original[100, 140]).all()


def test_min_score_hides_low_scores(tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    document = detections()
    result_beside(image, document)
    assert d2sm(capsys, "show", tmp_path / "a.jpg.json", "--min-score", "0.9").code == 0
    drawn = np.asarray(Image.open(tmp_path / "a.jpg.overlay.png")).astype(int)
    original = np.asarray(Image.open(image).convert("RGB")).astype(int)
    person = decoded_masks(document)[1]
    assert (drawn[person] == original[person]).all()


def test_image_with_exif_rotation_is_drawn_upright(tmp_path, capsys):
    """The server answers in the upright frame; show turns the photo the same way."""
    sideways = photo(tmp_path / "src.jpg", size=(120, 160))
    rotated = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.open(sideways).save(rotated, exif=exif)
    result_beside(rotated, detections(160, 120))
    assert d2sm(capsys, "show", tmp_path / "phone.jpg.json").code == 0
    assert Image.open(tmp_path / "phone.jpg.overlay.png").size == (160, 120)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (error_object(), "the model returned an error: invalid_input: the body is not a JPEG"),
        (detections(320, 240), "is 160x120 but the result is for 320x240: not the image it was computed on"),
        ({"image": {}}, "the answer has no instances list"),
    ],
)
def test_bad_results_are_one_line(tmp_path, capsys, document, message):
    image = photo(tmp_path / "a.jpg")
    result = result_beside(image, document)
    run = d2sm(capsys, "show", result)
    assert run.code == 1
    assert run.err.startswith("error: ") and message in run.err and run.err.count("\n") == 1
    assert not (tmp_path / "a.jpg.overlay.png").exists()


def test_missing_image_is_one_line(tmp_path, capsys):
    result = tmp_path / "gone.jpg.json"
    result.write_text(json.dumps(detections()))
    run = d2sm(capsys, "show", result)
    assert (run.code, run.err) == (
        1,
        f"error: {tmp_path / 'gone.jpg'} (the image for {result}) does not exist: pass --image\n",
    )


def test_missing_result_is_one_line(tmp_path, capsys):
    run = d2sm(capsys, "show", tmp_path / "nothing.jpg.json")
    assert (run.code, run.err) == (1, f"error: {tmp_path / 'nothing.jpg.json'} does not exist\n")


def crowded(width: int, height: int, count: int) -> dict:
    """`count` overlapping boxes with the same top-left region, some reaching the right edge."""
    instances = []
    for i in range(count):
        x1 = width - 30 if i % 3 == 0 else 10 + i % 5
        instances.append(
            {
                "class_id": 0,
                "class_name": "balloon",
                "score": 0.99 - i / 1000,
                "box": [x1, 5 + i % 4, width, height],
            }
        )
    return {"image": {"height": height, "width": width}, "instances": instances}


def test_labels_never_overlap_and_stay_inside_the_image(tmp_path):
    from d2sm.show import label_position

    placed: list[tuple[int, int, int, int]] = []
    document = crowded(320, 240, 40)
    for instance in document["instances"]:
        spot = label_position(instance["box"], (90, 20), (320, 240), placed)
        if spot is not None:
            placed.append(spot)
    assert len(placed) >= 12  # the column under each box is used, not just the spot above it
    for index, spot in enumerate(placed):
        assert min(spot[:2]) >= 0 and spot[2] <= 320 and spot[3] <= 240
        for other in placed[index + 1 :]:
            assert not (
                spot[0] < other[2] and other[0] < spot[2] and spot[1] < other[3] and other[1] < spot[3]
            )


def test_crowded_overlay_counts_what_it_draws(tmp_path, capsys):
    image = photo(tmp_path / "photo.jpg", size=(320, 240))
    document = crowded(320, 240, 100)
    for i, instance in enumerate(document["instances"]):
        instance["score"] = 0.9 if i < 5 else 0.1
    result = result_beside(image, document)
    run = d2sm(capsys, "show", result, "--min-score", "0.35")
    assert run.code == 0, run.err
    assert run.out == f"{tmp_path / 'photo.jpg.overlay.png'}: 5 instance(s)\n"


@pytest.mark.parametrize(("name", "expected"), [("x.jpg", "JPEG"), ("x.webp", "WEBP"), ("x.png", "PNG")])
def test_output_format_follows_the_extension(tmp_path, capsys, name, expected):
    image = photo(tmp_path / "photo.jpg", size=(160, 120))
    result = result_beside(image, detections())
    run = d2sm(capsys, "show", result, "--output", tmp_path / name)
    assert run.code == 0, run.err
    assert Image.open(tmp_path / name).format == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--output", "/nonexistent/dir/x.png"),
            "error: cannot write /nonexistent/dir/x.png: folder /nonexistent/dir does not exist\n",
        ),
        (
            ("--output", "{tmp}/x.txt"),
            "error: cannot write {tmp}/x.txt: unknown image extension '.txt' (use ",
        ),
        (
            ("--image", "{tmp}/notes.txt"),
            "error: cannot read image {tmp}/notes.txt: cannot identify image file",
        ),
    ],
)
def test_local_file_errors_are_one_line(tmp_path, capsys, args, message):
    image = photo(tmp_path / "photo.jpg", size=(160, 120))
    (tmp_path / "notes.txt").write_text("not an image")
    result = result_beside(image, detections())
    run = d2sm(capsys, "show", result, *(a.format(tmp=tmp_path) for a in args))
    assert run.code == 1
    assert run.err.startswith(message.format(tmp=tmp_path)), run.err
    assert run.err.count("\n") == 1
