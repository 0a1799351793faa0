"""Masks pasted into their box crops, one at a time, are the libraries' full-image pastes exactly: on
random 28x28 probabilities (many near the threshold, some exactly 1) and random boxes, including
boxes partly outside the image, boxes on its edges and boxes under a pixel wide; and the encoders
give the same bytes from the crop as from the full-size mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server import mask_encoding
from inference_server.masks import PastedMasks
from tests.container.artifacts import DETECTRON2_MISSING
from tests.container.mask_reference import full_image_polygons, full_image_rle

HEIGHT, WIDTH = 97, 131
SEEDS = range(4)


def random_probabilities(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, 1, 28, 28, generator=generator) * 4
    logits[0] = 40.0  # sigmoid rounds to exactly 1.0: the whole box and its edge pixels are in
    logits[1] = -40.0  # an empty mask
    return torch.sigmoid(logits)


def random_boxes(count: int, seed: int) -> torch.Tensor:
    """XYXY floats: ordinary, partly outside each side, on the edges, tiny (< 1 px) and whole-image."""
    rng = np.random.default_rng(seed)
    boxes = []
    for index in range(count):
        kind = index % 6
        if kind == 0:  # ordinary
            x0, y0 = rng.uniform(0, WIDTH - 10), rng.uniform(0, HEIGHT - 10)
            x1, y1 = x0 + rng.uniform(2, WIDTH - x0), y0 + rng.uniform(2, HEIGHT - y0)
        elif kind == 1:  # partly outside the top-left
            x0, y0 = rng.uniform(-30, 0), rng.uniform(-30, 0)
            x1, y1 = rng.uniform(1, 40), rng.uniform(1, 40)
        elif kind == 2:  # partly outside the bottom-right
            x0, y0 = rng.uniform(WIDTH - 40, WIDTH - 1), rng.uniform(HEIGHT - 40, HEIGHT - 1)
            x1, y1 = rng.uniform(WIDTH, WIDTH + 30), rng.uniform(HEIGHT, HEIGHT + 30)
        elif kind == 3:  # tiny: under a pixel each way
            x0, y0 = rng.uniform(0, WIDTH - 1), rng.uniform(0, HEIGHT - 1)
            x1, y1 = x0 + rng.uniform(0.01, 0.9), y0 + rng.uniform(0.01, 0.9)
        elif kind == 4:  # on the image edges, whole pixels
            x0, y0, x1, y1 = 0.0, float(rng.integers(0, HEIGHT - 5)), float(WIDTH), float(HEIGHT)
        else:  # the whole image and beyond
            x0, y0, x1, y1 = -3.5, -2.25, WIDTH + 4.75, HEIGHT + 1.5
        boxes.append((x0, y0, x1, y1))
    return torch.tensor(boxes, dtype=torch.float32)


def assert_crops_hold_the_full_masks(pasted: PastedMasks, expected: np.ndarray, boxes: torch.Tensor) -> None:
    assert pasted.shape == expected.shape and pasted.dtype == expected.dtype == np.bool_
    np.testing.assert_array_equal(np.asarray(pasted), expected)
    for index, mask in enumerate(expected):
        crop = pasted.crop(index)
        x0, y0, pixels = crop
        assert pixels.sum() == mask.sum()  # nothing of the mask lies outside its crop
        assert x0 >= 0 and x0 + pixels.shape[1] <= WIDTH and y0 >= 0 and y0 + pixels.shape[0] <= HEIGHT
        np.testing.assert_array_equal(pasted[index], mask)
        assert mask_encoding.encode_crop_rle(crop, HEIGHT, WIDTH) == full_image_rle(mask)
        assert mask_encoding.encode_crop_polygons(crop) == full_image_polygons(mask)
        assert mask_encoding.encode_mask_rle(mask, boxes[index].tolist()) == full_image_rle(mask)


@pytest.mark.parametrize("seed", SEEDS)
def test_torchvision_crops_are_its_full_image_paste(seed):
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from inference_server.backends.torchvision import MASK_THRESHOLD, TorchvisionMaskPaste

    probabilities, boxes = random_probabilities(36, seed), random_boxes(36, seed)
    expected = (paste_masks_in_image(probabilities, boxes, (HEIGHT, WIDTH))[:, 0] > MASK_THRESHOLD).numpy()
    assert expected[0].any() and not expected[1].any()
    paste = TorchvisionMaskPaste(probabilities, boxes, HEIGHT, WIDTH)
    assert_crops_hold_the_full_masks(PastedMasks(HEIGHT, WIDTH, len(boxes), paste), expected, boxes)


def test_a_torchvision_box_wholly_outside_the_image_pastes_nothing():
    from inference_server.backends.torchvision import TorchvisionMaskPaste

    boxes = torch.tensor([[WIDTH + 5.0, 10.0, WIDTH + 20.0, 30.0], [10.0, -40.0, 30.0, -20.0]])
    pasted = PastedMasks(
        HEIGHT, WIDTH, 2, TorchvisionMaskPaste(random_probabilities(2, 0), boxes, HEIGHT, WIDTH)
    )
    assert not np.asarray(pasted).any() and not pasted.any()
    assert mask_encoding.encode_crop_rle(pasted.crop(0), HEIGHT, WIDTH) == full_image_rle(
        np.zeros((HEIGHT, WIDTH), bool)
    )
    assert mask_encoding.encode_crop_polygons(pasted.crop(1)) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_detectron2_crops_are_its_full_image_paste_on_cpu_and_as_on_gpu(seed):
    pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
    from detectron2.layers.mask_ops import _do_paste_mask, paste_masks_in_image

    from inference_server.backends.detectron2 import Detectron2MaskPaste

    probabilities, boxes = random_probabilities(36, seed)[:, 0], random_boxes(36, seed)
    cpu = paste_masks_in_image(probabilities, boxes, (HEIGHT, WIDTH), threshold=0.5).numpy()
    # detectron2 on a GPU samples every pixel of the image at once (skip_empty=False).
    whole_image, _ = _do_paste_mask(probabilities[:, None], boxes, HEIGHT, WIDTH, skip_empty=False)
    np.testing.assert_array_equal((whole_image >= 0.5).numpy(), cpu)
    assert cpu[0].any() and not cpu[1].any()
    paste = Detectron2MaskPaste(probabilities, boxes, HEIGHT, WIDTH)
    assert_crops_hold_the_full_masks(PastedMasks(HEIGHT, WIDTH, len(boxes), paste), cpu, boxes)


def test_pasted_masks_index_slice_and_convert_like_the_array():
    full = np.random.default_rng(0).random((5, 6, 7)) > 0.5

    def paste(index: int):
        return 0, 0, full[index]

    masks = PastedMasks(6, 7, 5, paste)
    assert len(masks) == 5 and masks.shape == (5, 6, 7) and masks.ndim == 3
    np.testing.assert_array_equal(np.asarray(masks), full)
    np.testing.assert_array_equal(masks[-1], full[-1])
    np.testing.assert_array_equal(np.asarray(masks[1:4]), full[1:4])
    selection = np.array([4, 0, 2])
    np.testing.assert_array_equal(np.asarray(masks[selection]), full[selection])
    np.testing.assert_array_equal(np.asarray(masks[selection][1:]), full[selection][1:])
    np.testing.assert_array_equal(np.asarray(masks[full.any(axis=(1, 2))]), full[full.any(axis=(1, 2))])
    assert [mask.tolist() for mask in masks] == [mask.tolist() for mask in full]
    assert masks.any() == full.any()
    assert np.asarray(masks, dtype=np.uint8).dtype == np.uint8
    with pytest.raises(IndexError):
        masks[5]
