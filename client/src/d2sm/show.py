"""`show`: masks, boxes, class names and scores drawn over the image, written as PNG (or the format
the --output extension names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .errors import CliError
from .files import OVERLAY_SUFFIX, RESULT_SUFFIX, image_for, images_in, parse_result, result_path
from .progress import emit, summarize

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
                draw.polygon(list(zip(polygon[0::2], polygon[1::2], strict=False)), fill=1)
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
    boxed = [(index, instance) for index, instance in enumerate(instances) if "box" in instance]
    for index, instance in boxed:
        draw.rectangle(tuple(instance["box"]), outline=colour(index), width=line)
    # Labels after every box, so no box line crosses a label; the best-scoring instance gets the
    # best place.
    placed: list[tuple[int, int, int, int]] = []
    for index, instance in sorted(boxed, key=lambda item: -item[1].get("score", 0)):
        label = f"{instance.get('class_name', instance.get('class_id', '?'))} {instance.get('score', 0):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        size = (right - left + 2 * line, bottom - top + 2 * line)
        spot = label_position(instance["box"], size, canvas.size, placed)
        if spot is None:
            continue  # no free place left in the image: the box and mask stay, the label is dropped
        placed.append(spot)
        draw.rectangle(spot, fill=colour(index))
        draw.text((spot[0] + line - left, spot[1] + line - top), label, fill=(255, 255, 255), font=font)
    canvas.info["instances_drawn"] = len(instances)
    return canvas


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_position(box, size, image_size, placed) -> tuple[int, int, int, int] | None:
    """Where a label of `size` goes: above the box's top-left corner, else inside it, else below
    it, else further down the box's column; always inside the image and clear of earlier labels.
    None when the label fits nowhere (more labels than the image has room for)."""
    width, height = size
    image_width, image_height = image_size
    if width > image_width or height > image_height:
        return None
    x1, y1, x2, y2 = (round(v) for v in box)
    x = min(max(0, x1), image_width - width)
    candidates = [y1 - height, y1, y2, *range(y1 + height, image_height - height + 1, height)]
    candidates += range(0, image_height - height + 1, height)  # anywhere in the column, top to bottom
    for y in candidates:
        y = min(max(0, y), image_height - height)
        spot = (x, y, x + width, y + height)
        if not any(overlaps(spot, other) for other in placed):
            return spot
    return None


def load_result(result: Path) -> dict:
    try:
        body = result.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {result}: {error.strerror}") from None
    return parse_result(body, str(result))


def overlay_path(image: Path) -> Path:
    return image.with_name(image.name + OVERLAY_SUFFIX)


def output_format(output: Path) -> str:
    """The image format the output's extension names (PIL's table); refuse one PIL cannot write."""
    extension = output.suffix.lower()
    known = Image.registered_extensions()
    writable = {ext: fmt for ext, fmt in known.items() if fmt in Image.SAVE}
    if extension not in writable:
        choices = ", ".join(
            sorted(e for e in writable if e in {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
        )
        raise CliError(
            f"cannot write {output}: unknown image extension {extension or '(none)'!r} (use {choices})"
        )
    return writable[extension]


def show_one(result: Path, image: Path | None, output: Path | None, min_score: float) -> tuple[Path, int]:
    """Write the overlay; return where, and how many instances it draws."""
    image = image or image_for(result)
    if not image.is_file():
        raise CliError(f"{image} (the image for {result}) does not exist: pass --image")
    document = load_result(result)
    output = output or overlay_path(image)
    image_format = output_format(output)
    try:
        canvas = render(image, document, min_score)
    except (UnidentifiedImageError, OSError) as error:
        raise CliError(f"cannot read image {image}: {str(error).splitlines()[0]}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise CliError(f"{result} is not a result `show` can draw: {type(error).__name__}: {error}") from None
    if not output.parent.is_dir():
        raise CliError(f"cannot write {output}: folder {output.parent} does not exist")
    try:
        canvas.save(output, format=image_format)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot write {output}: {getattr(error, 'strerror', None) or error}") from None
    return output, canvas.info["instances_drawn"]


def add_parser(commands, common) -> None:
    sho = commands.add_parser(
        "show", parents=[common], help="draw masks, boxes, classes and scores over the image (PNG by default)"
    )
    sho.add_argument("path", type=Path, help="a result (photo.jpg.json) or a folder of images with results")
    sho.add_argument("--image", type=Path, help="the image (default: the result's name without .json)")
    sho.add_argument(
        "--output",
        type=Path,
        help="file to write, its format from the extension (default: photo.jpg.overlay.png)",
    )
    sho.add_argument("--min-score", type=float, default=0.0, help="hide instances scoring below this")
    sho.set_defaults(
        handler=lambda args: run(
            path=args.path, image=args.image, output=args.output, min_score=args.min_score
        )
    )


def run(*, path: Path, image: Path | None, output: Path | None, min_score: float):
    if not path.exists():
        raise CliError(f"{path} does not exist")
    if path.is_file() and path.name.endswith(RESULT_SUFFIX):
        saved, drawn = show_one(path, image, output, min_score)
        emit(
            {"result": str(path), "overlay": str(saved), "instances": drawn}, f"{saved}: {drawn} instance(s)"
        )
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
            saved, drawn = show_one(result, picture, None, min_score)
            emit({"result": str(result), "overlay": str(saved), "instances": drawn}, str(saved))
        except CliError as error:
            failures[picture] = str(error)
    summarize(failures, len(pairs), f"{len(pairs) - len(failures)} overlay(s) written")
