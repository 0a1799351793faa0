"""Where the model copies go, and what each inference runs under. Imported after the port is bound
(it imports torch).

One copy per visible GPU by default (CUDA_VISIBLE_DEVICES narrows what is visible), one on CPU.
MODEL_COPIES fixes the number: copies are spread round-robin over the GPUs (two copies on one GPU
can overlap one copy's CPU pre/post-processing with the other's GPU work), or all share the CPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from inference_server.settings import MixedPrecision

logger = logging.getLogger("inference_server")

AUTOCAST_DTYPES = {MixedPrecision.FP16: torch.float16, MixedPrecision.BF16: torch.bfloat16}


def plan(model_copies: int | None) -> list[str]:
    """The device of each model copy."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus:
        return ["cpu"] * (model_copies or 1)
    return [f"cuda:{index % gpus}" for index in range(model_copies or gpus)]


def bind(device: str) -> None:
    """Make `device` the calling thread's current CUDA device, so that everything the copy's thread
    creates on "cuda" (the backends' default, or a user's model_fn) lands on its own GPU."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))


def precision(device: str, mixed_precision: MixedPrecision) -> Callable[[], AbstractContextManager]:
    """What each inference on `device` runs inside: torch.autocast on CUDA when asked, else nothing."""
    if mixed_precision is MixedPrecision.OFF:
        return contextlib.nullcontext
    if not device.startswith("cuda"):
        logger.warning("MIXED_PRECISION=%s applies to CUDA only; %s runs in float32", mixed_precision, device)
        return contextlib.nullcontext
    dtype = AUTOCAST_DTYPES[mixed_precision]
    return lambda: torch.autocast("cuda", dtype=dtype)
