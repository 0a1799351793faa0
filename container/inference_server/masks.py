"""Instance masks kept as the model's low-resolution probabilities and pasted into their box crops
one at a time, when the encoder (or a user's output_fn) asks for them.

A Mask R-CNN predicts one 28x28 mask per instance and pastes it into the full image: the libraries
allocate N full-size masks (torchvision as float32, then thresholded: about 9 bytes per pixel per
instance at its peak; detectron2 N bytes per pixel), so a 40 MP photo with 100 instances needs tens
of GB. Every pixel outside an instance's paste region is zero, so the region is all there is to
keep; here not even that is kept: each crop is computed from the 28x28 probabilities when it is
read, with the library's own arithmetic on the model's device, so it holds the same pixels the
library would have written (see backends/*.py), and memory per instance is one crop at a time.

`PastedMasks` also behaves as the (N, H, W) bool array the libraries return: `masks[i]` is the
full-size mask, `np.asarray(masks)` all of them (which costs what it always did), so a user's
output_fn that indexes or converts masks keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

# One pasted mask: (x0, y0, crop), the crop an (h, w) bool array placed at column x0, row y0; every
# pixel of the full-size mask outside it is False.
Crop = tuple[int, int, np.ndarray]


@dataclass(frozen=True)
class PastedMasks:
    image_height: int
    image_width: int
    count: int
    paste: Callable[[int], Crop]  # the crop of mask i, computed on each call
    indices: tuple[int, ...] | None = None  # a selection of the pasted masks; None: all of them

    dtype = np.dtype(bool)
    ndim = 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), self.image_height, self.image_width)

    def __len__(self) -> int:
        return self.count if self.indices is None else len(self.indices)

    def crop(self, index: int) -> Crop:
        """Mask `index` as its crop and offset: what the encoders read."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"mask {index} out of range for {len(self)} masks")
        index %= len(self)
        return self.paste(index if self.indices is None else self.indices[index])

    def full(self, index: int) -> np.ndarray:
        """Mask `index` at full image size, as the library returns it."""
        x0, y0, crop = self.crop(index)
        mask = np.zeros((self.image_height, self.image_width), bool)
        mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return mask

    def __getitem__(self, key: Any) -> np.ndarray | PastedMasks:
        if isinstance(key, int | np.integer):
            return self.full(int(key))
        selected = np.arange(len(self))[key]  # slices, index arrays and boolean masks, as numpy
        if selected.ndim != 1:
            raise IndexError(f"masks take one index, a slice or a 1-D selection; got {key!r}")
        source = np.arange(self.count) if self.indices is None else np.asarray(self.indices)
        return PastedMasks(
            self.image_height, self.image_width, self.count, self.paste, tuple(source[selected].tolist())
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.full(index) for index in range(len(self)))

    def __array__(self, dtype: Any = None, copy: object = None) -> np.ndarray:
        masks = np.zeros(self.shape, bool)
        for index in range(len(self)):
            x0, y0, crop = self.crop(index)
            masks[index, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return masks if dtype is None else masks.astype(dtype)

    def any(self) -> bool:
        return any(self.crop(index)[2].any() for index in range(len(self)))


def autocast_context() -> Callable[[], AbstractContextManager]:
    """The CUDA autocast state of the calling thread, to re-enter where a mask is pasted later, so
    that a paste under MIXED_PRECISION runs as it would have inside the model's forward."""
    import torch

    if not torch.is_autocast_enabled("cuda"):
        return nullcontext
    dtype = torch.get_autocast_dtype("cuda")
    return lambda: torch.autocast("cuda", dtype=dtype)
