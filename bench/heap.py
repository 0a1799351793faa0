"""HEAP_POLICY: the same artifact served with `retain` (the default) and with `release` (glibc's
defaults), both servers up at once and the requests interleaved one at a time: latency, the page
faults and kernel time each request costs the server, and its RSS."""

from __future__ import annotations

import argparse
import functools

import requests

from bench.common import Backend, Server, Table, ms, percentile, timed

TITLE = "Heap policy (HEAP_POLICY)"
POLICIES = ("retain", "release")


def process_counters(server: Server) -> tuple[int, float, float]:
    """Minor page faults, kernel CPU seconds and RSS (MiB) of the server process so far."""
    return server.page_faults(), server.kernel_cpu_s(), server.rss_mib()


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

            def invoke(policy: str, servers=servers, sessions=sessions, backend=backend) -> None:
                servers[policy].invoke(backend.jpeg, sessions[policy]).raise_for_status()

            for policy in POLICIES:
                invoke(policy)  # the connection and the first request's one-off costs
            before = {policy: process_counters(servers[policy]) for policy in POLICIES}
            latencies: dict[str, list[float]] = {policy: [] for policy in POLICIES}
            for _ in range(options.pairs):
                for policy in POLICIES:
                    latencies[policy].append(timed(functools.partial(invoke, policy)))
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
