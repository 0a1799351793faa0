"""Folder runs against a server that refuses with 503 first, and Ctrl-C as a real signal: nothing
is sent after it, what was in flight is saved, a rerun sends only the rest."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .fake_server import FakeServer
from .helpers import CLIENT_SRC, d2sm, detections, photo


@pytest.fixture
def fake():
    servers: list[FakeServer] = []

    def start(**kwargs) -> FakeServer:
        server = FakeServer(json.dumps(kwargs.pop("answer", detections())).encode(), **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def folder(path: Path, count: int) -> list[Path]:
    path.mkdir(exist_ok=True)
    return [photo(path / f"p{i:02d}.jpg", seed=i) for i in range(count)]


def test_503_with_retry_after_then_200_saves_every_result(fake, tmp_path, capsys):
    images = folder(tmp_path / "photos", 6)
    server = fake(refuse_first=5, retry_after_s=0)

    run = d2sm(capsys, "invoke", tmp_path / "photos", "--url", server.url, "--concurrency", "3")

    assert run.code == 0, run.err
    assert len(server.requests) == 6 + 5
    for image in images:
        assert json.loads((image.parent / f"{image.name}.json").read_text()) == detections()
    assert run.out.splitlines()[-1] == "6 result(s) saved beside the images"


def test_retry_after_header_is_honoured_without_a_body_hint(fake, tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    server = fake(refuse_first=2, retry_after_s=None, retry_after_header="0")
    run = d2sm(capsys, "invoke", image, "--url", server.url)
    assert run.code == 0, run.err
    assert len(server.requests) == 3


def test_retries_are_bounded_and_a_shared_failure_is_printed_once(fake, tmp_path, capsys):
    folder(tmp_path / "photos", 4)
    server = fake(refuse_first=10_000, retry_after_s=0)

    run = d2sm(capsys, "invoke", tmp_path / "photos", "--url", server.url, "--retries", "2")

    assert run.code == 1
    assert len(server.requests) == 4 * 3
    first = tmp_path / "photos" / "p00.jpg"
    assert run.err == (
        f"error: 4 images ({first}, ...): {server.url} answered 503: overloaded: the queue is full "
        "(after 3 attempts: raise --retries or lower --concurrency)\n"
        "error: 4 of 4 images failed\n"
    )


def test_existing_results_are_skipped_unless_overwrite(fake, tmp_path, capsys):
    images = folder(tmp_path / "photos", 3)
    (tmp_path / "photos" / "p01.jpg.json").write_text(json.dumps(detections() | {"old": True}))
    server = fake()

    run = d2sm(capsys, "invoke", tmp_path / "photos", "--url", server.url)
    assert run.code == 0, run.err
    assert len(server.requests) == 2
    assert "skipping 1 image(s) that already have a result (--overwrite to redo them)" in run.err
    assert json.loads((tmp_path / "photos" / "p01.jpg.json").read_text())["old"] is True

    again = d2sm(capsys, "invoke", tmp_path / "photos", "--url", server.url, "--overwrite")
    assert again.code == 0, again.err
    assert len(server.requests) == 2 + 3
    assert all("old" not in json.loads((i.parent / f"{i.name}.json").read_text()) for i in images)


def test_recursive_with_out_dir_mirrors_subfolders(fake, tmp_path, capsys):
    (tmp_path / "photos" / "day2").mkdir(parents=True)
    photo(tmp_path / "photos" / "top.jpg")
    photo(tmp_path / "photos" / "day2" / "deep.png")
    server = fake()

    flat = d2sm(capsys, "invoke", tmp_path / "photos", "--url", server.url, "--out-dir", tmp_path / "out")
    assert flat.code == 0, flat.err
    assert len(server.requests) == 1

    deep = d2sm(
        capsys, "invoke", tmp_path / "photos", "-r", "--url", server.url, "--out-dir", tmp_path / "out"
    )
    assert deep.code == 0, deep.err
    assert len(server.requests) == 2  # top.jpg already had its result under out/
    assert (tmp_path / "out" / "top.jpg.json").is_file()
    assert json.loads((tmp_path / "out" / "day2" / "deep.png.json").read_text()) == detections()
    assert not (tmp_path / "photos" / "day2" / "deep.png.json").exists()


def test_json_output_is_one_object_per_result(fake, tmp_path, capsys):
    folder(tmp_path / "photos", 2)
    server = fake()
    run = d2sm(capsys, "invoke", tmp_path / "photos", "--url", server.url, "--json")
    assert run.code == 0, run.err
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert sorted(line["image"] for line in lines[:2]) == [
        str(tmp_path / "photos" / "p00.jpg"),
        str(tmp_path / "photos" / "p01.jpg"),
    ]
    assert all(line["instances"] == 2 for line in lines[:2])
    assert lines[2] == {"done": True, "saved": 2, "skipped": 0}


def test_ctrl_c_sends_nothing_more_and_waits_for_what_is_in_flight(fake, tmp_path, capsys):
    folder(tmp_path / "photos", 6)
    server = fake(hold=True)
    server.hold_target = 2  # both workers' requests have arrived and are being held
    env = {**os.environ, "PYTHONPATH": str(CLIENT_SRC)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "d2sm",
            "invoke",
            str(tmp_path / "photos"),
            "--url",
            server.url,
            "--concurrency",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.held.wait(timeout=120), "the client never sent its first requests"
        process.send_signal(signal.SIGINT)
        # The client says it is waiting before the held requests are answered: nothing raced.
        assert process.stderr is not None
        first_line = process.stderr.readline()
        assert first_line == (
            "interrupted: 4 not sent; waiting for the 2 request(s) in flight (Ctrl-C again to stop at once)\n"
        )
        server.release.set()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert err == (
        "error: interrupted: 2 result(s) saved, 0 failed, 4 not sent (run again to send only those)\n"
    )
    assert len(server.requests) == 2
    saved = sorted(p.name for p in (tmp_path / "photos").glob("*.json"))
    assert saved == ["p00.jpg.json", "p01.jpg.json"]
    assert sorted(out.splitlines()) == [str(tmp_path / "photos" / name) for name in saved]

    server.hold = False
    rerun = d2sm(capsys, "invoke", tmp_path / "photos", "--url", server.url)
    assert rerun.code == 0, rerun.err
    assert len(server.requests) == 6


def test_bench_sends_what_its_table_reports(fake, tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    server = fake()
    run = d2sm(capsys, "bench", server.url, "--image", image, "--max-concurrency", "4", "--requests", "5")
    assert run.code == 0, run.err
    header, *rows = run.out.splitlines()
    assert header.split() == [
        "CONCURRENCY",
        "REQUESTS",
        "ERRORS",
        "P50_MS",
        "P95_MS",
        "P99_MS",
        "THROUGHPUT_RPS",
    ]
    assert [row.split()[:3] for row in rows] == [["1", "5", "0"], ["2", "5", "0"], ["4", "5", "0"]]
    assert len(server.requests) == 1 + 3 * 5  # the warm-up, then each level


def test_bench_counts_refusals_as_errors(fake, tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    server = fake(refuse_first=3)
    run = d2sm(capsys, "bench", server.url, "--image", image, "--max-concurrency", "1", "--requests", "4")
    # The warm-up itself was refused: no table from a target that does not answer yet.
    assert (run.code, run.err.splitlines()[-1]) == (
        1,
        f"error: {server.url} does not answer a first request: fix that before benchmarking",
    )
    assert len(server.requests) == 1


def test_upload_of_an_unreadable_image_is_one_line(deployed, tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    image.chmod(0)
    try:
        if os.access(image, os.R_OK):
            pytest.skip("running as root: every file is readable")
        run = d2sm(capsys, "batch", image, "--batch-id", "b1")
    finally:
        image.chmod(0o644)
    assert run.code == 1
    assert run.err.startswith(f"error: uploading {image}: Permission denied")


def test_no_server_at_the_url_is_one_line_for_the_whole_folder(tmp_path, capsys):
    folder(tmp_path / "photos", 3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        run = d2sm(capsys, "invoke", tmp_path / "photos", "--url", f"http://127.0.0.1:{port}")
    assert run.code == 1
    first = tmp_path / "photos" / "p00.jpg"
    assert run.err == (
        f"error: 3 images ({first}, ...): cannot reach http://127.0.0.1:{port}: Failed to establish a new "
        "connection: [Errno 111] Connection refused (is the server running? `d2sm serve` starts one)\n"
        "error: 3 of 3 images failed\n"
    )
