"""`d2sm serve` runs the real inference server on a real (torchvision, seeded) model.tar.gz on
127.0.0.1; `invoke --url` and `show` work against it as against an endpoint. No AWS involved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .helpers import CLIENT_SRC, REPO, d2sm

pytest.importorskip("torch", reason="the local server runs the model with torch")

CONTAINER = REPO / "container"
PHOTOS = sorted((REPO / "tests" / "data" / "images").glob("*.jpg"))
READY_TIMEOUT_S = 300  # a busy 2-core machine imports torch and loads the model in tens of seconds
# The server's settings; cleared so a developer's shell cannot change what the tests see.
# The child processes get only these from this environment: no server setting (the container's
# settings module owns their names) and no AWS credentials leak in from the developer's shell.
INHERITED = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in INHERITED}
    return {**env, "PYTHONPATH": str(CLIENT_SRC)}


def d2sm_command(*args) -> list[str]:
    return [sys.executable, "-m", "d2sm", *map(str, args)]


@pytest.fixture(scope="module")
def model_tarball(tmp_path_factory) -> Path:
    from tests.container.artifacts import build_torchvision_artifact

    return build_torchvision_artifact(tmp_path_factory.mktemp("artifact")).parent / "model.tar.gz"


@pytest.fixture(scope="module")
def served(model_tarball, tmp_path_factory):
    """`d2sm serve model.tar.gz --port P` as its own process, until the module's tests are done."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            d2sm_command("serve", model_tarball, "--port", port, "--container-dir", CONTAINER),
            env=client_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"d2sm serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            if requests.get(f"{url}/ping", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"not ready after {READY_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield url, process, log_path
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.needs_torch
def test_invoke_url_saves_what_the_server_answers_and_show_draws_it(served, tmp_path, capsys):
    url, _, _ = served
    image = tmp_path / "photo.jpg"
    shutil.copyfile(PHOTOS[0], image)
    direct = requests.post(
        f"{url}/invocations", data=image.read_bytes(), headers={"Content-Type": "image/jpeg"}, timeout=120
    )
    assert direct.status_code == 200

    # A global flag after the subcommand is accepted (and unused by --url).
    run = d2sm(capsys, "invoke", image, "--region", "us-east-1", "--url", url)

    assert run.code == 0, run.err
    saved = json.loads((tmp_path / "photo.jpg.json").read_text())
    assert saved == direct.json()
    assert run.out.splitlines() == [str(tmp_path / "photo.jpg.json"), "1 result(s) saved beside the images"]

    shown = d2sm(capsys, "show", tmp_path / "photo.jpg.json")
    assert shown.code == 0, shown.err
    overlay = tmp_path / "photo.jpg.overlay.png"
    assert shown.out == f"{overlay}: {len(saved['instances'])} instance(s)\n"
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.needs_torch
def test_folder_against_the_local_server_with_attributes(served, tmp_path, capsys):
    url, _, _ = served
    for photo in PHOTOS[:3]:
        shutil.copyfile(photo, tmp_path / photo.name)

    run = d2sm(
        capsys, "invoke", tmp_path, "--url", url, "--concurrency", "2", "--attributes", "max_detections=1"
    )

    assert run.code == 0, run.err
    for photo in PHOTOS[:3]:
        assert len(json.loads((tmp_path / f"{photo.name}.json").read_text())["instances"]) <= 1


@pytest.mark.needs_torch
def test_bad_option_is_the_servers_one_line(served, tmp_path, capsys):
    url, _, _ = served
    image = tmp_path / "photo.jpg"
    shutil.copyfile(PHOTOS[0], image)
    run = d2sm(capsys, "invoke", image, "--url", url, "--attributes", "max_detections=-3")
    assert run.code == 1
    assert run.err.startswith(f"error: {url} answered 400: invalid_option: ")
    assert run.err.count("\n") == 1


@pytest.mark.needs_torch
def test_bench_prints_a_table_per_concurrency(served, tmp_path, capsys):
    url, _, _ = served
    run = d2sm(
        capsys, "bench", url, "--image", PHOTOS[0], "--max-concurrency", "2", "--requests", "2", "--json"
    )
    assert run.code == 0, run.err
    rows = [json.loads(line) for line in run.out.splitlines()]
    assert [(r["concurrency"], r["requests"], r["errors"]) for r in rows] == [(1, 2, 0), (2, 2, 0)]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["throughput_rps"] > 0 for r in rows)


@pytest.mark.needs_torch
def test_ctrl_c_stops_the_server_gracefully(served):
    """Last in the module: the signal goes to d2sm, which passes it on once; the server exits 0."""
    url, process, log_path = served
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/ping", timeout=5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.tar.gz", "missing.tar.gz does not exist"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no metadata.json"),
        (
            lambda tmp: (tmp / "x.tar.gz").write_text("text") and tmp / "x.tar.gz",
            "is not a readable model.tar.gz",
        ),
    ],
)
def test_bad_model_is_one_line(tmp_path, make, message):
    result = subprocess.run(
        d2sm_command("serve", make(tmp_path), "--container-dir", CONTAINER),
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.needs_torch
def test_python_without_the_serving_packages_is_one_line(model_tarball, tmp_path):
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages
    bare.chmod(0o755)
    result = subprocess.run(
        d2sm_command("serve", model_tarball, "--container-dir", CONTAINER, "--python", bare),
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {bare} lacks the serving packages (ModuleNotFoundError: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.needs_torch
def test_serve_without_the_container_folder_says_how(model_tarball, tmp_path):
    result = subprocess.run(
        d2sm_command("serve", model_tarball), env=client_env(), capture_output=True, text=True, cwd=tmp_path
    )
    assert (result.returncode, result.stderr) == (
        1,
        "error: serve needs the repository's container/ folder (the inference server): run it from a clone "
        "or pass --container-dir; or use --docker with a built image\n",
    )


@pytest.mark.needs_torch
def test_docker_without_a_daemon_is_one_line(model_tarball, tmp_path):
    if shutil.which("docker") is None:
        expected = "error: --docker: no docker command on PATH\n"
    else:
        probe = subprocess.run(["docker", "info"], capture_output=True)
        if probe.returncode == 0:
            pytest.skip("a Docker daemon answers here: --docker would start the image")
        expected = None
    result = subprocess.run(
        d2sm_command("serve", model_tarball, "--docker"), env=client_env(), capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    if expected:
        assert result.stderr == expected
    else:
        assert result.stderr.startswith("error: --docker: no Docker daemon answers (")


def test_client_imports_neither_torch_nor_the_server():
    code = (
        "import sys, d2sm.cli; from d2sm.cli import parser; parser(); "
        "bad = [m for m in ('torch', 'inference_server', 'pydantic', 'aws_cdk') if m in sys.modules]; "
        "print(bad)"
    )
    env = {**client_env(), "PYTHONPATH": str(CLIENT_SRC)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr
