"""`show`: masks, boxes, class names and scores drawn over the image, written as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import CliError
from .files import OVERLAY_SUFFIX, RESULT_SUFFIX, image_for, images_in, parse_result, result_path
from .progress import say, summarize

# Distinct, saturated colours (Tableau 10), one per instance in score order.
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
MASK_OPACITY = 0.5


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def instance_mask(instance: dict, height: int, width: int) -> np.ndarray | None:
    """H x W bool from COCO RLE (`mask`) or polygons (`polygons`); None without a mask."""
    if "mask" in instance:
        rle = instance["mask"]
        counts = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
        return mask_util.decode({"size": rle["size"], "counts": counts}).astype(bool)
    if instance.get("polygons"):
        canvas = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in instance["polygons"]:
            if len(polygon) >= 6:
                draw.polygon(list(zip(polygon[0::2], polygon[1::2])), fill=1)
        return np.array(canvas, dtype=bool)
    return None


def render(image_path: Path, document: dict, min_score: float = 0.0) -> Image.Image:
    # The server makes images upright from their EXIF orientation; coordinates are in that frame.
    image = ImageOps.exif_transpose(Image.open(image_path)).convert("RGB")
    expected = document.get("image", {})
    if (expected.get("width"), expected.get("height")) not in {(image.width, image.height), (None, None)}:
        raise CliError(
            f"{image_path} is {image.width}x{image.height} but the result is for "
            f"{expected.get('width')}x{expected.get('height')}: not the image it was computed on"
        )
    instances = [i for i in document["instances"] if i.get("score", 1.0) >= min_score]
    pixels = np.asarray(image, dtype=np.float32)
    for index, instance in enumerate(instances):
        mask = instance_mask(instance, image.height, image.width)
        if mask is not None:
            if mask.shape != pixels.shape[:2]:
                raise CliError(
                    f"mask {index} is {mask.shape[1]}x{mask.shape[0]}, the image {image.width}x{image.height}"
                )
            pixels[mask] = (1 - MASK_OPACITY) * pixels[mask] + MASK_OPACITY * np.array(colour(index))
    canvas = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(image.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 30)))
    for index, instance in enumerate(instances):
        if "box" not in instance:
            continue
        x1, y1, x2, y2 = instance["box"]
        draw.rectangle((x1, y1, x2, y2), outline=colour(index), width=line)
        label = f"{instance.get('class_name', instance.get('class_id', '?'))} {instance.get('score', 0):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_y = y1 - (bottom - top) - 2 * line if y1 - (bottom - top) - 2 * line >= 0 else y1 + line
        draw.rectangle(
            (x1, text_y, x1 + right - left + 2 * line, text_y + bottom - top + 2 * line), fill=colour(index)
        )
        draw.text((x1 + line - left, text_y + line - top), label, fill=(255, 255, 255), font=font)
    return canvas


def load_result(result: Path) -> dict:
    try:
        body = result.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {result}: {error.strerror}") from None
    return parse_result(body, str(result))


def overlay_path(image: Path) -> Path:
    return image.with_name(image.name + OVERLAY_SUFFIX)


def show_one(result: Path, image: Path | None, output: Path | None, min_score: float) -> Path:
    image = image or image_for(result)
    if not image.is_file():
        raise CliError(f"{image} (the image for {result}) does not exist: pass --image")
    document = load_result(result)
    output = output or overlay_path(image)
    render(image, document, min_score).save(output, format="PNG")
    return output


def run(*, path: Path, image: Path | None, output: Path | None, min_score: float):
    if not path.exists():
        raise CliError(f"{path} does not exist")
    if path.is_file() and path.name.endswith(RESULT_SUFFIX):
        saved = show_one(path, image, output, min_score)
        say(f"{saved}: {len(json.loads(path.read_text())['instances'])} instance(s)")
        return
    if not path.is_dir():
        raise CliError(f"{path} is neither a result .json nor a folder")
    if image is not None or output is not None:
        raise CliError("--image and --output name one file: give a result .json, not a folder")
    pairs = [(result_path(i), i) for i in images_in(path) if result_path(i).is_file()]
    if not pairs:
        raise CliError(f"{path} holds no image with a result beside it (photo.jpg + photo.jpg.json)")
    failures: dict[Path, str] = {}
    for result, picture in pairs:
        try:
            say(str(show_one(result, picture, None, min_score)))
        except CliError as error:
            failures[picture] = str(error)
    summarize(failures, len(pairs), f"{len(pairs) - len(failures)} overlay(s) written")
