"""The memory budget: the per-request estimate, the container's memory (cgroup or MEMORY_LIMIT_MB),
the admission that refuses an image the container cannot hold (413 insufficient_memory) and bounds
the requests in progress by memory (503 overloaded), unit by unit and against the real server."""

from __future__ import annotations

import dataclasses
import io
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from inference_server import memory
from inference_server.errors import InsufficientMemory, Overloaded, RequestTimedOut
from inference_server.memory import (
    HEADROOM_FRACTION,
    MIB,
    MemoryBudget,
    MemoryLimit,
    MemoryModel,
    RequestEstimate,
    RequestMemory,
)
from inference_server.settings import Settings, SettingsError

from .artifacts import TEST_IMAGES, build_torchvision_artifact

# The estimate ----------------------------------------------------------------------------------

MODEL = MemoryModel(
    working_bytes_per_image_pixel=10,
    bytes_per_input_pixel=100,
    bytes_per_detection=1000,
    min_size=800,
    max_size=1333,
    max_detections=100,
)


@pytest.mark.parametrize(
    ("width", "height", "input_pixels"),
    [
        (1200, 800, 1200 * 800),  # the shorter side already at min_size
        (4242, 2828, 1200 * 800),  # scaled down by the shorter side
        (640, 480, 1067 * 800),  # scaled up: both libraries resize small images up too
        (1333, 500, 1333 * 500),  # scaling 500 up to 800 would take 1333 past max_size: capped
        (8000, 1000, 1333 * 167),  # a wide strip: the longer side caps it
        (2000, 1200, 1333 * 800),  # exactly at the ratio where both limits meet
    ],
)
def test_the_model_input_is_the_libraries_resize(width, height, input_pixels):
    assert MODEL.input_pixels(width, height) == input_pixels
    assert MODEL.input_pixels(height, width) == input_pixels  # portrait or landscape alike


def test_the_estimate_is_the_documented_sum():
    estimate = MODEL.estimate(4242, 2828, body_bytes=12345)
    pixels = 4242 * 2828
    assert estimate.held == 12345 + memory.DECODED_BYTES_PER_PIXEL * pixels
    assert estimate.working == 10 * pixels + 100 * 1200 * 800 + 1000 * 100
    assert estimate.total == estimate.held + estimate.working


def test_the_estimate_grows_with_pixels_and_detections_only_where_the_formula_says():
    small, large = MODEL.estimate(1200, 800), MODEL.estimate(2400, 1600)
    # Four times the pixels, the same model input: only the per-pixel terms grow.
    assert large.total - small.total == (memory.DECODED_BYTES_PER_PIXEL + 10) * 3 * 1200 * 800
    fewer = MemoryModel(10, 100, 1000, max_detections=10)
    assert MODEL.estimate(1200, 800).working - fewer.estimate(1200, 800).working == 1000 * 90


# bench/memory.py's figures (MiB above idle, 800/1333, CPU; README, *Performance*) that memory.py's
# constants are fitted to: (backend constants, (width, height), detections, measured peak). The two
# rows marked are from the first run, before torchvision's input was normalized in place.
TV, D2 = memory.TORCHVISION_MEMORY, memory.DETECTRON2_MEMORY
ONE_MP, TWELVE_MP, FORTY_MP = (1224, 816), (4242, 2828), (7746, 5164)
MEASURED = [
    (TV, ONE_MP, 10, 143),
    (TV, ONE_MP, 100, 83),
    (TV, ONE_MP, 100, 235),  # first run
    (TV, TWELVE_MP, 10, 277),
    (TV, TWELVE_MP, 100, 276),
    (TV, TWELVE_MP, 100, 461),  # first run
    (TV, FORTY_MP, 10, 789),
    (TV, FORTY_MP, 100, 653),
    (D2, ONE_MP, 10, 181),
    (D2, ONE_MP, 100, 90),
    (D2, TWELVE_MP, 10, 246),
    (D2, TWELVE_MP, 100, 156),
    (D2, FORTY_MP, 10, 242),
    (D2, FORTY_MP, 100, 218),
]


@pytest.mark.parametrize(("model", "size", "detections", "measured_mib"), MEASURED)
def test_the_estimate_is_at_or_above_every_measured_peak(model, size, detections, measured_mib):
    estimate = dataclasses.replace(model, max_detections=detections).estimate(*size).total
    assert estimate >= measured_mib * MIB


def test_a_40_mp_request_with_100_detections_fits_in_well_under_the_memory_serverless_has():
    # Serverless endpoints have at most 6 GB: a 40 MP photo must fit beside the ~1.4 GiB idle model.
    assert TV.estimate(*FORTY_MP).total < 1.2 * 1024 * MIB


# The budget ------------------------------------------------------------------------------------


def budget(available_mib: int, copies: int = 1, refuse_when_full: bool = True) -> MemoryBudget:
    """A budget leaving exactly available_mib for requests: the rest of its limit is headroom and idle."""
    limit = MemoryLimit(10 * 1024 * MIB, "MEMORY_LIMIT_MB")
    idle = int(limit.bytes * (1 - HEADROOM_FRACTION)) - available_mib * MIB
    made = MemoryBudget(limit, idle, copies=copies, refuse_when_full=refuse_when_full)
    assert made.available == available_mib * MIB
    return made


def estimate_mib(held: int, working: int) -> RequestEstimate:
    return RequestEstimate(held * MIB, working * MIB)


def test_a_request_that_fits_alone_exactly_is_admitted_and_one_byte_more_is_413():
    room = budget(100)
    reservation = room.reserve(estimate_mib(40, 60), "image 1x1", deadline=math.inf, retry_after_s=1)
    room.release(reservation)
    with pytest.raises(InsufficientMemory) as refused:
        room.reserve(RequestEstimate(40 * MIB, 60 * MIB + 1), "image 7746x5164", math.inf, 1)
    message = str(refused.value)
    assert "image 7746x5164 needs about 100 MiB" in message
    assert "100 MiB this container has for one request" in message
    assert "MEMORY_LIMIT_MB" in message
    assert room.in_use() == 0


def test_requests_in_progress_bound_the_next_by_memory_with_a_retry_after():
    room = budget(100)
    first = room.reserve(estimate_mib(30, 40), "image a", math.inf, 1)
    # Held images add up; only one working set counts with one copy (only one runs at a time).
    second = room.reserve(estimate_mib(20, 10), "image b", math.inf, 1)
    assert room.in_use() == (30 + 20 + 40) * MIB
    with pytest.raises(Overloaded) as refused:
        room.reserve(estimate_mib(11, 1), "image c", math.inf, retry_after_s=7)
    assert refused.value.retry_after_s == 7
    assert "image c needs about 12 MiB more" in str(refused.value)
    room.release(first)
    room.release(first)  # releasing twice is harmless
    third = room.reserve(estimate_mib(11, 1), "image c", math.inf, 1)
    assert room.in_use() == (20 + 11 + 10) * MIB
    room.release(second)
    room.release(third)
    assert room.in_use() == 0


def test_each_copy_counts_one_working_set():
    room = budget(100, copies=2)
    room.reserve(estimate_mib(10, 40), "image a", math.inf, 1)
    # 10 + 10 held, and both working sets (two copies can run both at once): 100 fits.
    room.reserve(estimate_mib(10, 40), "image b", math.inf, 1)
    with pytest.raises(Overloaded):
        room.reserve(estimate_mib(1, 1), "image c", math.inf, 1)  # 21 held + the largest two 80


def test_async_and_batch_wait_for_memory_within_their_deadline():
    room = budget(100, refuse_when_full=False)
    first = room.reserve(estimate_mib(50, 40), "image a", math.inf, 1)
    with pytest.raises(RequestTimedOut, match="waited for memory"):
        room.reserve(estimate_mib(20, 20), "image b", deadline=time.monotonic() - 1, retry_after_s=1)
    admitted = threading.Event()

    def wait_for_memory() -> None:
        room.reserve(estimate_mib(20, 20), "image b", deadline=time.monotonic() + 300, retry_after_s=1)
        admitted.set()

    waiter = threading.Thread(target=wait_for_memory, daemon=True)
    waiter.start()
    deadline = time.monotonic() + 60
    while not room.waiting:  # it waits while the first holds the memory
        assert time.monotonic() < deadline and waiter.is_alive()
        time.sleep(0.01)
    assert not admitted.is_set()
    room.release(first)
    assert admitted.wait(60)
    waiter.join(60)


def test_a_request_that_ends_while_it_waits_for_memory_stops_waiting():
    room = budget(100, refuse_when_full=False)
    first = room.reserve(estimate_mib(50, 40), "image a", math.inf, 1)
    held = RequestMemory(room)
    outcome: list[BaseException] = []

    def wait_for_memory() -> None:
        try:
            held.reserve(estimate_mib(20, 20), "image b", deadline=math.inf, retry_after_s=1)
        except RequestTimedOut as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait_for_memory, daemon=True)
    waiter.start()
    deadline = time.monotonic() + 60
    while not room.waiting:
        assert time.monotonic() < deadline and waiter.is_alive()
        time.sleep(0.01)
    held.close()  # the caller hung up, or the shutdown answered it
    waiter.join(60)
    assert not waiter.is_alive()
    assert "ended while it waited for memory" in str(outcome[0])
    assert room.in_use() == (50 + 40) * MIB  # only the first still holds memory
    room.release(first)


def test_a_reservation_that_arrives_after_its_request_ended_is_given_back():
    room = budget(100)
    held = RequestMemory(room)
    held.close()  # the request ended (cancelled, timed out) while its image header was being read
    held.reserve(estimate_mib(10, 10), "image a", math.inf, 1)
    assert held.reservation is None
    assert room.in_use() == 0


# The container's memory ------------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_is_the_lowest_on_the_path(tmp_path):
    write(tmp_path / "self-cgroup", "0::/kubepods/pod1/container\n")
    write(tmp_path / "cg" / "kubepods" / "pod1" / "container" / "memory.max", "max\n")
    write(tmp_path / "cg" / "kubepods" / "pod1" / "memory.max", f"{6 * 1024 * MIB}\n")
    write(tmp_path / "cg" / "kubepods" / "memory.max", f"{8 * 1024 * MIB}\n")
    limit = memory.cgroup_limit(tmp_path / "cg", tmp_path / "self-cgroup")
    assert limit == MemoryLimit(6 * 1024 * MIB, "cgroup v2 memory.max")


def test_cgroup_v2_limit_at_the_namespace_root(tmp_path):
    # In a container the cgroup namespace shows "/" and its limit sits at the mount's root.
    write(tmp_path / "self-cgroup", "0::/\n")
    write(tmp_path / "cg" / "memory.max", "4294967296\n")
    assert memory.cgroup_limit(tmp_path / "cg", tmp_path / "self-cgroup").bytes == 4 * 1024 * MIB


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path):
    write(tmp_path / "self-cgroup", "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n")
    write(tmp_path / "cg" / "memory" / "docker" / "abc" / "memory.limit_in_bytes", f"{3 * 1024 * MIB}\n")
    write(tmp_path / "cg" / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")  # no limit
    limit = memory.cgroup_limit(tmp_path / "cg", tmp_path / "self-cgroup")
    assert limit == MemoryLimit(3 * 1024 * MIB, "cgroup v1 memory.limit_in_bytes")


def test_no_cgroup_limit_falls_back_to_physical_memory_and_the_setting_wins(tmp_path):
    write(tmp_path / "self-cgroup", "0::/\n")
    write(tmp_path / "cg" / "memory.max", "max\n")
    write(tmp_path / "meminfo", "MemTotal:       16384000 kB\nMemFree:        1000 kB\n")
    paths = {
        "root": tmp_path / "cg",
        "proc_self_cgroup": tmp_path / "self-cgroup",
        "meminfo": tmp_path / "meminfo",
    }
    assert memory.container_memory(None, **paths) == MemoryLimit(16384000 * 1024, "physical memory")
    assert memory.container_memory(512, **paths) == MemoryLimit(512 * MIB, "MEMORY_LIMIT_MB")
    # A cgroup limit under physical memory is the one that applies.
    write(tmp_path / "cg" / "memory.max", f"{1024 * MIB}\n")
    assert memory.container_memory(None, **paths).source == "cgroup v2 memory.max"
    # Nothing readable (not Linux): no budget.
    missing = {name: tmp_path / "missing" for name in paths}
    assert memory.container_memory(None, **missing) is None


def test_garbage_in_the_cgroup_files_is_no_limit(tmp_path):
    write(tmp_path / "self-cgroup", "garbage without colons\n0::/a\n")
    write(tmp_path / "cg" / "a" / "memory.max", "lots\n")
    write(tmp_path / "cg" / "memory.max", "0\n")
    assert memory.cgroup_limit(tmp_path / "cg", tmp_path / "self-cgroup") is None


# The setting -----------------------------------------------------------------------------------


def test_memory_limit_setting():
    assert Settings.from_env({}).memory_limit_mb is None
    assert Settings.from_env({"MEMORY_LIMIT_MB": "6144"}).memory_limit_mb == 6144
    for bad in ("0", "-1", "6GB", "1.5", str(16 * 1024 * 1024 + 1)):
        with pytest.raises(
            SettingsError, match=r"MEMORY_LIMIT_MB='.*' is invalid; allowed: an integer in 1\.\.16777216"
        ):
            Settings.from_env({"MEMORY_LIMIT_MB": bad})


# Against the real server -----------------------------------------------------------------------

# predict_fn holds an inference of a large image while the file `hold` exists in HOLD_DIR, so that
# its memory stays reserved while the test sends the next request.
HOLD_CODE = """
import os
import time
from pathlib import Path


def predict_fn(data, model, context):
    folder = Path(os.environ["HOLD_DIR"])
    if (folder / "hold").exists() and data.shape[0] * data.shape[1] > 10_000_000:
        (folder / "started").write_text(context.request_id)
        deadline = time.monotonic() + 300
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return model(data)
"""
# The artifact's sizes (build_torchvision_artifact's defaults).
ARTIFACT_MODEL = dataclasses.replace(memory.TORCHVISION_MEMORY, min_size=320, max_size=512, max_detections=10)
COPIES = 2


def smooth_jpeg(width: int, height: int) -> bytes:
    """A low-detail image that compresses to a small JPEG at any size."""
    ys, xs = np.mgrid[0:48, 0:64]
    small = np.stack([xs * 4, ys * 5, (xs + ys) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hold_model_dir(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("memory-artifact")
    code = dest / "code"
    code.mkdir()
    (code / "inference.py").write_text(HOLD_CODE)
    return build_torchvision_artifact(dest / "artifact", code=code)


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {
        "photo": TEST_IMAGES[0].read_bytes(),
        "40 MP": smooth_jpeg(7746, 5164),
        "64 MP": smooth_jpeg(8000, 8000),
    }


def idle_mib(server) -> float:
    """The loaded model's resident memory, as the server's memory log line states it."""
    import re

    for record in server.records():
        match = re.search(r"and (\d+) MiB for the loaded model", str(record["message"]))
        if match:
            return float(match.group(1))
    raise AssertionError(f"no memory line in the log:\n{server.log()[-3000:]}")


def test_memory_admission_against_the_real_server(start_server, hold_model_dir, images, tmp_path):
    env = {"MODEL_COPIES": str(COPIES), "OMP_NUM_THREADS": "1", "HOLD_DIR": str(tmp_path)}

    # A limit below what the loaded model itself holds: every image is refused, 413 naming the limit.
    starved = start_server(hold_model_dir, {**env, "MEMORY_LIMIT_MB": "1"})
    response = starved.invoke(images["photo"], "image/jpeg")
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_memory"
    assert (
        "over the 0 MiB this container has for one request (memory limit 1 MiB (MEMORY_LIMIT_MB)"
        in (error["message"])
    )
    assert starved.ping().status_code == 200  # refusing a request says nothing about the server
    assert "every image will be refused 413 insufficient_memory" in starved.log()
    idle = idle_mib(starved)
    starved.stop()

    # Room for a 40 MP request and a half: one runs, a second at once does not fit, a 64 MP never does.
    single = ARTIFACT_MODEL.estimate(7746, 5164, len(images["40 MP"])).total
    huge = ARTIFACT_MODEL.estimate(8000, 8000, len(images["64 MP"])).total
    available = 1.4 * single
    assert single < available < min(2 * single, huge)
    limit_mb = math.ceil((idle * MIB + available) / (1 - HEADROOM_FRACTION) / MIB)
    server = start_server(hold_model_dir, {**env, "MEMORY_LIMIT_MB": str(limit_mb)})
    assert abs(idle_mib(server) - idle) < 0.1 * available / MIB  # the two processes load alike

    response = server.invoke(images["64 MP"], "image/jpeg")
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_memory"
    assert f"image 8000x8000 needs about {huge / MIB:.0f} MiB to run" in error["message"]
    assert f"memory limit {limit_mb} MiB (MEMORY_LIMIT_MB)" in error["message"]

    (tmp_path / "hold").write_text("")
    held: dict[str, requests.Response] = {}
    first = threading.Thread(
        target=lambda: held.setdefault("response", server.invoke(images["40 MP"], "image/jpeg")), daemon=True
    )
    first.start()
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline, server.log()[-3000:]
        assert first.is_alive(), held
        time.sleep(0.05)
    # The first holds its memory while it runs: a second 40 MP request is refused at once, 503.
    response = server.invoke(images["40 MP"], "image/jpeg")
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "overloaded"
    assert error["retry_after_s"] >= 1
    assert response.headers["Retry-After"] == str(error["retry_after_s"])
    assert "needs about" in error["message"] and "MiB of the" in error["message"]
    # A small photo still fits beside it, and runs on the other copy.
    assert server.invoke(images["photo"], "image/jpeg").status_code == 200
    (tmp_path / "release").write_text("")
    first.join(300)
    assert held["response"].status_code == 200, held["response"].text
    # Its memory was given back: the next 40 MP request runs.
    (tmp_path / "hold").unlink()
    assert server.invoke(images["40 MP"], "image/jpeg").status_code == 200
    assert server.ping().status_code == 200


# An input_fn of the artifact's own decodes without the server's size check: its image is budgeted
# from the array it returns, still before the model runs.
OWN_DECODER_CODE = """
import io
import os

import numpy as np
from PIL import Image


def input_fn(body, content_type):
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def predict_fn(data, model):
    with open(os.environ["PREDICTED"], "a") as marker:
        marker.write("called\\n")
    return model(data)
"""


def test_an_image_from_a_custom_input_fn_is_held_to_the_budget_too(start_server, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(OWN_DECODER_CODE)
    model_dir = build_torchvision_artifact(tmp_path / "artifact", code=code)
    photo = TEST_IMAGES[0]
    width, height = Image.open(photo).size
    predicted = tmp_path / "predicted"
    server = start_server(model_dir, {"MEMORY_LIMIT_MB": "1", "PREDICTED": str(predicted)})
    response = server.invoke(photo.read_bytes(), "image/jpeg")
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "insufficient_memory"
    assert f"image {width}x{height} needs about" in response.json()["error"]["message"]
    assert not predicted.exists()  # refused before the model ran
