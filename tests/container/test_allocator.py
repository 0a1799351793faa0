"""HEAP_POLICY: with `retain`, memory a thread frees stays mapped for the next allocation of the same
size (no page faults); with `release`, glibc gives large blocks back to the kernel at once.

Each case runs in a fresh interpreter: the policy is process-wide and must be set before any thread
allocates, as the server does at start.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from .conftest import CONTAINER_DIR

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="HEAP_POLICY tunes glibc's malloc",
)

# Two rounds of what an inference does on its thread: allocate and touch blocks larger than glibc's
# largest mmap threshold (32 MiB) and its per-thread heap (64 MiB), then free them.
PROBE = """
import json, resource, sys, threading
import numpy as np
from inference_server import allocator

took_effect = allocator.apply(allocator.HeapPolicy(sys.argv[1]))

def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) // 1024

def one_round(report):
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    blocks = [np.ones(size << 20, np.uint8) for size in (40, 96, 160)]
    del blocks
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults
    report.append({"faults": faults, "rss_mib": rss_mib()})

rounds = []
before = rss_mib()
for _ in range(2):
    worker = threading.Thread(target=one_round, args=(rounds,))
    worker.start()
    worker.join()
print(json.dumps({"took_effect": took_effect, "before_mib": before, "rounds": rounds}))
"""
BLOCKS_MIB = 40 + 96 + 160


def probe(policy: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, policy],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(CONTAINER_DIR), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(completed.stdout)


def test_retain_keeps_freed_blocks_mapped_so_the_next_round_takes_no_page_faults():
    result = probe("retain")
    first, second = result["rounds"]
    assert result["took_effect"]
    assert first["rss_mib"] - result["before_mib"] >= BLOCKS_MIB * 0.9  # the peak stays mapped after free
    # (fault counts depend on the page size the kernel backs them with; the ratio does not)
    assert second["faults"] <= first["faults"] * 0.05  # the second round reuses it
    assert abs(second["rss_mib"] - first["rss_mib"]) < 16  # without growing


def test_release_gives_large_blocks_back_and_every_round_faults_them_in_again():
    result = probe("release")
    first, second = result["rounds"]
    assert first["rss_mib"] - result["before_mib"] < 16 and second["rss_mib"] - result["before_mib"] < 16
    assert second["faults"] >= first["faults"] * 0.5 > 0
