"""How much memory one request needs, how much the container has, and the budget that admission
holds every request to, so that no legal request runs the process out of memory.

A request's estimate (`MemoryModel.estimate`) has two parts:

- held: the request body and its decoded image, kept from decoding until the answer is sent, also
  while the request waits for a model copy;
- working: what the inference adds while it runs on a copy: the backend's full-size preprocessing
  (a float copy of the image on torchvision), the network's activations at the resized model
  input, and the per-detection tensors and mask crops.

The constants are fitted to `python -m bench --tables memory` (peak RSS above idle of the real
server process, per request, on CPU; docs/performance.md has the table): each is the measured
slope, rounded up, so the estimate is at or above every measured peak.

The container's memory is its cgroup limit (v2 memory.max, v1 memory.limit_in_bytes, the lowest
on the cgroup's path) where one is set, else the machine's physical memory; MEMORY_LIMIT_MB
overrides it. What requests may use together is that limit, less a headroom for what no estimate
covers (allocator fragmentation, the HTTP layer, logs), less the process's resident memory once the
model copies are loaded and warmed up.

The budget (`MemoryBudget`): a request whose own estimate exceeds what requests may use is refused
413 `insufficient_memory` (it could never run here); otherwise it is admitted only if the held
memory of every admitted request, plus the working memory of as many of them as there are model
copies (the largest, as only that many run at once), still fits; when it does not, real-time and
serverless requests are refused 503 `overloaded` with `retry_after_s`, async and batch requests
wait for memory to free (within their timeout).

On a GPU the activations and the tensors live in GPU memory: the host-side estimate then
over-counts, which only makes the budget stricter.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inference_server.errors import InsufficientMemory, Overloaded, RequestTimedOut

MIB = 1024 * 1024
# Bytes of a decoded HWC uint8 RGB image per pixel; the server's BGR flip briefly holds a second copy.
DECODED_BYTES_PER_PIXEL = 3
# Share of the container's memory left for what no request estimate covers: allocator fragmentation
# and retained heap (HEAP_POLICY=retain keeps freed memory mapped), the HTTP layer, logging.
HEADROOM_FRACTION = 0.1
# A cgroup memory limit at or above this is "no limit" (cgroup v1 writes 2^63 rounded to a page).
UNLIMITED_BYTES = 1 << 60
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_MEMINFO = Path("/proc/meminfo")
PROC_SELF_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class MemoryModel:
    """One backend's memory per request, as a function of the image and the model's sizes."""

    # Working bytes per pixel of the decoded image, on top of the held image itself: the backend's
    # full-size preprocessing and the mask crops.
    working_bytes_per_image_pixel: float
    # Bytes per pixel of the resized model input: the backbone, FPN and heads' activations.
    bytes_per_input_pixel: float
    # Bytes per detection: roi features, mask probabilities, the encoded response.
    bytes_per_detection: float
    # The shorter side the model resizes to, and the cap on its longer side (INPUT.MIN/MAX_SIZE_TEST,
    # torchvision's min_size/max_size), and the most detections it returns.
    min_size: int = 800
    max_size: int = 1333
    max_detections: int = 100

    def input_pixels(self, width: int, height: int) -> int:
        """Pixels of the model input: the shorter side scaled to min_size, unless that would take
        the longer side past max_size (both libraries resize small images up too)."""
        scale = min(self.min_size / min(width, height), self.max_size / max(width, height))
        return round(width * scale) * round(height * scale)

    def estimate(self, width: int, height: int, body_bytes: int = 0) -> RequestEstimate:
        pixels = width * height
        held = body_bytes + DECODED_BYTES_PER_PIXEL * pixels
        working = (
            self.working_bytes_per_image_pixel * pixels
            + self.bytes_per_input_pixel * self.input_pixels(width, height)
            + self.bytes_per_detection * self.max_detections
        )
        return RequestEstimate(held=math.ceil(held), working=math.ceil(working))


# Fitted to the memory benchmark (see the module docstring): peak RSS above the warmed-up idle on
# CPU at 800/1333, for 1 / 12 / 40 MP images. torchvision: 143 / 277 / 789 MiB with 10 detections,
# 83 / 276 / 653 MiB with 100 (its warm-up already left 100 detections' worth mapped). The steepest
# image slope, 12 -> 40 MP, is 19 B/px: 3 of them the held image, 12 the float32 CHW copy the
# preprocessing holds while the network runs, the rest transients; 21 B/px are budgeted. The 1 MP
# intercept is ~125 MiB at the 0.96 MP model input (detectron2's: ~165 MiB): 180 B per input pixel.
# 10 -> 100 detections added 129-136 MiB in the first run's rows (roi and mask-head activations,
# the response): 1.5 MiB each. A mask crop as large as the image (5.6 B/px) is pasted after the
# float copy is freed, so the preprocessing term covers it. Every measured peak is under its estimate.
TORCHVISION_MEMORY = MemoryModel(
    working_bytes_per_image_pixel=18,
    bytes_per_input_pixel=180,
    bytes_per_detection=1.5 * MIB,
)
# detectron2 resizes the uint8 image before converting it to float, so its preprocessing adds little:
# 181 / 246 / 242 MiB with 10 detections, 90 / 156 / 218 MiB with 100. What scales with the image is
# the mask crop: _do_paste_mask's sampling grid and output for a box as large as the image, 12.0 B/px
# (458 MiB for one 40 MP crop; the random-weight benchmark's boxes are smaller), plus 1 B/px for the
# encoder's copy. The input and detection terms are torchvision's: the same R50-FPN network.
DETECTRON2_MEMORY = MemoryModel(
    working_bytes_per_image_pixel=13,
    bytes_per_input_pixel=180,
    bytes_per_detection=1.5 * MIB,
)
# A model_fn of the artifact's own: the larger backend's constants at the stock serving sizes.
DEFAULT_MEMORY = TORCHVISION_MEMORY


def memory_model(model: object) -> MemoryModel:
    """The model's own memory model (the backends' predictors have one), else the default."""
    found = getattr(model, "memory_model", None)
    return found if isinstance(found, MemoryModel) else DEFAULT_MEMORY


@dataclass(frozen=True)
class RequestEstimate:
    held: int  # bytes from decoding until the answer
    working: int  # bytes added while it runs on a model copy

    @property
    def total(self) -> int:
        return self.held + self.working


# The container's memory -------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # where it came from, for the log and the 413 message

    def describe(self) -> str:
        return f"{self.bytes / MIB:.0f} MiB ({self.source})"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < UNLIMITED_BYTES else None


def _ancestors(relative: str) -> list[str]:
    """'/a/b' -> ['a/b', 'a', '']: a cgroup's own folder and each above it (each limit applies)."""
    parts = [part for part in relative.strip("/").split("/") if part]
    return ["/".join(parts[:end]) for end in range(len(parts), -1, -1)]


def cgroup_limit(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> MemoryLimit | None:
    """The lowest memory limit on this process's cgroup path, v2 (memory.max) or v1
    (memory/memory.limit_in_bytes); None when no limit is set or no cgroup is mounted.

    Inside a container the process's cgroup is usually mounted at the root of /sys/fs/cgroup while
    /proc/self/cgroup still names its path on the host, so the root is always read too."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    v2_path, v1_path = "", ""
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    candidates: list[tuple[Path, str]] = []
    for relative in _ancestors(v2_path):
        folder = root / relative if relative else root
        candidates.append((folder / "memory.max", "cgroup v2 memory.max"))
    for relative in _ancestors(v1_path):
        folder = root / "memory" / relative if relative else root / "memory"
        candidates.append((folder / "memory.limit_in_bytes", "cgroup v1 memory.limit_in_bytes"))
    found = [(value, source) for path, source in candidates if (value := _read_int(path)) is not None]
    if not found:
        return None
    value, source = min(found)
    return MemoryLimit(value, source)


def physical_memory(meminfo: Path = PROC_MEMINFO) -> MemoryLimit | None:
    try:
        match = re.search(r"^MemTotal:\s+(\d+) kB", meminfo.read_text(), re.MULTILINE)
    except OSError:
        return None
    return MemoryLimit(int(match.group(1)) * 1024, "physical memory") if match else None


def container_memory(
    override_mb: int | None,
    root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
    meminfo: Path = PROC_MEMINFO,
) -> MemoryLimit | None:
    """MEMORY_LIMIT_MB when set, else the cgroup limit or physical memory, whichever is lower; None
    where neither can be read (not Linux): no budget is then enforced."""
    if override_mb is not None:
        return MemoryLimit(override_mb * MIB, "MEMORY_LIMIT_MB")
    found = (cgroup_limit(root, proc_self_cgroup), physical_memory(meminfo))
    limits = [limit for limit in found if limit is not None]
    return min(limits, key=lambda limit: limit.bytes) if limits else None


def resident_bytes(status: Path = PROC_SELF_STATUS) -> int | None:
    """This process's resident memory (VmRSS) now; None where /proc is not there."""
    try:
        match = re.search(r"^VmRSS:\s+(\d+) kB", status.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


# The budget -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Reservation:
    estimate: RequestEstimate
    released: bool = False


@dataclass
class MemoryBudget:
    """What the admitted requests may hold together (see the module docstring)."""

    limit: MemoryLimit
    idle_bytes: int  # the process's resident memory with the model copies loaded
    copies: int  # model copies: how many requests run (hold their working memory) at once
    refuse_when_full: bool  # real-time and serverless: 503 at once; async and batch wait
    clock: Callable[[], float] = time.monotonic
    _reservations: list[Reservation] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    refused: int = 0
    waiting: int = 0  # async and batch requests waiting for memory now

    @property
    def available(self) -> int:
        """Bytes all requests together may use."""
        return int(self.limit.bytes * (1 - HEADROOM_FRACTION)) - self.idle_bytes

    def describe(self) -> str:
        return (
            f"{max(self.available, 0) / MIB:.0f} MiB for requests: the limit {self.limit.describe()}, "
            f"less {HEADROOM_FRACTION:.0%} headroom and {self.idle_bytes / MIB:.0f} MiB for the loaded model"
        )

    def _held_by(self, reservations: list[Reservation]) -> int:
        """Every request's held memory, plus the working memory of the largest `copies` of them:
        only that many run at once."""
        working = sorted((r.estimate.working for r in reservations), reverse=True)[: self.copies]
        return sum(r.estimate.held for r in reservations) + sum(working)

    def _needed(self, extra: Reservation) -> int:
        return self._held_by([*self._reservations, extra])

    def reserve(
        self,
        estimate: RequestEstimate,
        what: str,
        deadline: float,
        retry_after_s: int,
        ended: Callable[[], bool] = lambda: False,
    ) -> Reservation:
        """Hold the request's estimate until `release`, or refuse it (see the module docstring).

        `what` names the request's image for the messages ("image 7746x5164"); `deadline` (the
        clock's time) bounds the wait of async and batch requests, and so does `ended` (checked
        whenever `wake` is called): a request that ended while waiting stops waiting."""
        reservation = Reservation(estimate)
        if estimate.total > self.available:
            with self._changed:
                self.refused += 1
            raise InsufficientMemory(
                f"{what} needs about {estimate.total / MIB:.0f} MiB to run, over the "
                f"{max(self.available, 0) / MIB:.0f} MiB this container has for one request (memory limit "
                f"{self.limit.describe()}, less {HEADROOM_FRACTION:.0%} headroom and "
                f"{self.idle_bytes / MIB:.0f} MiB for the loaded model); send a smaller image or serve on "
                "an instance with more memory"
            )
        with self._changed:
            while self._needed(reservation) > self.available:
                remaining = deadline - self.clock()
                if ended():
                    raise RequestTimedOut(f"{what}: the request ended while it waited for memory")
                if self.refuse_when_full or remaining <= 0:
                    self.refused += 1
                    in_use = self._needed(reservation) - estimate.total
                    if self.refuse_when_full:
                        raise Overloaded(
                            f"the requests in progress hold about {in_use / MIB:.0f} MiB of the "
                            f"{self.available / MIB:.0f} MiB for requests; {what} needs about "
                            f"{estimate.total / MIB:.0f} MiB more",
                            retry_after_s=retry_after_s,
                        )
                    raise RequestTimedOut(
                        f"{what} waited for memory until its limit (REQUEST_TIMEOUT_S): the requests in "
                        f"progress hold about {in_use / MIB:.0f} MiB of the {self.available / MIB:.0f} MiB "
                        "for requests"
                    )
                self.waiting += 1
                try:
                    self._changed.wait(min(remaining, threading.TIMEOUT_MAX))
                finally:
                    self.waiting -= 1
            self._reservations.append(reservation)
        return reservation

    def wake(self) -> None:
        """Make every request waiting for memory check again whether it has ended."""
        with self._changed:
            self._changed.notify_all()

    def release(self, reservation: Reservation) -> None:
        with self._changed:
            if reservation.released:
                return
            reservation.released = True
            self._reservations.remove(reservation)
            self._changed.notify_all()

    def in_use(self) -> int:
        """Bytes the admitted requests hold now, by the same rule admission applies."""
        with self._changed:
            return self._held_by(self._reservations)


class RequestMemory:
    """One request's hold on the budget: taken once its image size is known (on a codec thread),
    given back when the request ends (on the event loop), whichever comes first: a reservation that
    arrives after the request has ended is given back at once."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.reservation: Reservation | None = None
        self._closed = False
        self._lock = threading.Lock()

    def reserve(self, estimate: RequestEstimate, what: str, deadline: float, retry_after_s: int) -> None:
        if self.reservation is not None:
            return  # a user's input_fn may decode more than one image: the first one is budgeted
        reservation = self.budget.reserve(estimate, what, deadline, retry_after_s, ended=lambda: self._closed)
        with self._lock:
            if not self._closed:
                self.reservation = reservation
                return
        self.budget.release(reservation)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            reservation, self.reservation = self.reservation, None
        if reservation is not None:
            self.budget.release(reservation)
        else:
            self.budget.wake()  # it may be waiting for memory on a codec thread: it stops
