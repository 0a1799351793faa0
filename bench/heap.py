"""HEAP_POLICY: the same artifact served with `retain` (the default) and with `release` (glibc's
defaults), both servers up at once and the requests interleaved one at a time: latency, the page
faults and kernel time each request costs the server, and its RSS."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import requests

from bench.common import Backend, Server, Table, ms, percentile, timed

TITLE = "Heap policy (HEAP_POLICY)"
POLICIES = ("retain", "release")


def process_counters(server: Server) -> tuple[int, float, float]:
    """Minor page faults, kernel CPU seconds and RSS (MiB) of the server process so far."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return int(fields[7]), int(fields[12]) / os.sysconf("SC_CLK_TCK"), rss_kib / 1024


def run(backends: list[Backend], options: argparse.Namespace) -> Table:
    table = Table(
        TITLE,
        [
            "backend",
            "image",
            "policy",
            "served p50 / p95",
            "page faults per request",
            "kernel CPU per request",
            "server RSS after",
        ],
    )
    for backend in backends:
        servers = {
            policy: backend.start_server(f"heap-{policy}", {"HEAP_POLICY": policy}) for policy in POLICIES
        }
        try:
            sessions = {policy: requests.Session() for policy in POLICIES}

            def invoke(policy: str) -> None:
                response = sessions[policy].post(
                    f"{servers[policy].url}/invocations",
                    data=backend.jpeg,
                    headers={"Content-Type": "image/jpeg"},
                    timeout=600,
                )
                response.raise_for_status()

            for policy in POLICIES:
                invoke(policy)  # the connection and the first request's one-off costs
            before = {policy: process_counters(servers[policy]) for policy in POLICIES}
            latencies: dict[str, list[float]] = {policy: [] for policy in POLICIES}
            for _ in range(options.pairs):
                for policy in POLICIES:
                    latencies[policy].append(timed(lambda policy=policy: invoke(policy)))
            after = {policy: process_counters(servers[policy]) for policy in POLICIES}
        finally:
            for server in servers.values():
                server.stop()
        for policy in POLICIES:
            faults = (after[policy][0] - before[policy][0]) / options.pairs
            kernel_s = (after[policy][1] - before[policy][1]) / options.pairs
            table.rows.append(
                [
                    backend.name,
                    backend.describe_image(),
                    policy + (" (default)" if policy == "retain" else ""),
                    f"{ms(percentile(latencies[policy], 50))} / {ms(percentile(latencies[policy], 95))}",
                    f"{faults:,.0f}",
                    ms(kernel_s),
                    f"{after[policy][2]:.0f} MiB",
                ]
            )
    table.notes.append(
        f"{options.pairs} requests per policy, interleaved; faults and kernel CPU from the server's "
        "/proc counters over those requests"
    )
    return table
