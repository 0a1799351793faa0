"""Static checks of container/Dockerfile: Docker cannot build here, so what can be read is checked."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DIR = REPO_ROOT / "container"
# T4, A100, A10G, L4, H100: the GPUs of the instance types the stacks offer.
REQUIRED_CUDA_ARCHS = {"7.5", "8.0", "8.6", "8.9", "9.0"}
ACCEPT_BIND_TO_PORT = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda match: self.global_args[match.group(1)], text)


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped; ARGs before the first FROM."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in filter(str.strip, text.splitlines()):
        instruction, _, arguments = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arguments.strip(), re.IGNORECASE)
            current = Stage(base=match.group(1), name=match.group(2))
            stages[current.name or f"#{len(stages)}"] = current
        elif current is None and instruction == "ARG":
            name, _, value = arguments.partition("=")
            global_args[name] = shlex.split(value)[0] if value else ""
        elif current is not None:
            current.instructions.append((instruction, " ".join(arguments.split())))
    return Dockerfile(global_args, stages)


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(CONTAINER_DIR / "Dockerfile")


TARGETS = ("gpu", "cpu")


def test_both_targets_exist_on_the_expected_bases(dockerfile):
    assert set(TARGETS) <= set(dockerfile.stages)
    assert dockerfile.expand(dockerfile.stages["gpu"].base).startswith(
        f"nvidia/cuda:{dockerfile.global_args['CUDA_VERSION']}-runtime-"
    )
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", dockerfile.expand(dockerfile.stages["cpu"].base))


@pytest.mark.parametrize("target", TARGETS)
def test_target_follows_the_sagemaker_contract(dockerfile, target):
    stage = dockerfile.stages[target]

    [entrypoint] = stage.arguments("ENTRYPOINT")
    assert json.loads(entrypoint) == ["serve"]  # exec form: SIGTERM reaches the server
    assert ACCEPT_BIND_TO_PORT in stage.arguments("LABEL")
    assert stage.arguments("EXPOSE") == ["8080"]
    assert "--from=program / /" in stage.arguments("COPY")
    [env] = stage.arguments("ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env.split() and "PYTHONPATH=/opt/program" in env.split()


@pytest.mark.parametrize("target", TARGETS)
def test_build_tools_stay_in_the_build_stage(dockerfile, target):
    stage = dockerfile.stages[target]
    assert not stage.arguments("RUN"), "the runtime stage only copies what its build stage produced"
    assert "devel" not in stage.base
    build_stage = dockerfile.stages[f"{target}-build"]
    assert any("build-essential" in run for run in build_stage.arguments("RUN"))


def test_serve_is_on_the_path_and_runs_the_package(dockerfile):
    program = dockerfile.stages["program"]
    assert program.base == "scratch"
    assert "--chmod=755 bin/serve /usr/local/bin/serve" in program.arguments("COPY")
    assert "inference_server /opt/program/inference_server" in program.arguments("COPY")
    serve = CONTAINER_DIR / "bin" / "serve"
    assert os.access(serve, os.X_OK)
    assert "exec python -m inference_server" in serve.read_text()


def test_torch_versions_agree_with_requirements_dev(dockerfile):
    dev_pins = requirement_pins(REPO_ROOT / "requirements-dev.txt")
    assert dockerfile.global_args["TORCH_VERSION"] == dev_pins["torch"]
    assert dockerfile.global_args["TORCHVISION_VERSION"] == dev_pins["torchvision"]


@pytest.mark.parametrize(("target", "index"), [("gpu", "cu{cuda}"), ("cpu", "cpu")])
def test_each_target_installs_the_pinned_torch_build_for_its_device(dockerfile, target, index):
    cuda_major, cuda_minor, _ = dockerfile.global_args["CUDA_VERSION"].split(".")
    wheel_index = f"https://download.pytorch.org/whl/{index.format(cuda=cuda_major + cuda_minor)}"
    runs = " ".join(dockerfile.stages[f"{target}-build"].arguments("RUN"))
    assert (
        f"--index-url {wheel_index} torch==${{TORCH_VERSION}} torchvision==${{TORCHVISION_VERSION}}" in runs
    )
    assert "-r /tmp/requirements.txt" in runs


def test_only_the_cpu_target_carries_the_cpu_runtime_at_the_tested_version(dockerfile):
    assert "${CPU_RUNTIME_DEPS}" in " ".join(dockerfile.stages["cpu-build"].arguments("RUN"))
    assert "${CPU_RUNTIME_DEPS}" not in " ".join(dockerfile.stages["gpu-build"].arguments("RUN"))
    dev_pins = requirement_pins(REPO_ROOT / "requirements-dev.txt")
    for package in dockerfile.global_args["CPU_RUNTIME_DEPS"].split():
        name, _, version = package.partition("==")
        assert dev_pins[name] == version


@pytest.mark.parametrize("target", TARGETS)
def test_detectron2_is_built_from_the_pinned_commit(dockerfile, target):
    assert re.fullmatch(r"[0-9a-f]{40}", dockerfile.global_args["DETECTRON2_COMMIT"])
    runs = " ".join(dockerfile.stages[f"{target}-build"].arguments("RUN"))
    assert "detectron2 @ git+https://github.com/facebookresearch/detectron2.git@${DETECTRON2_COMMIT}" in runs


def test_gpu_build_compiles_detectron2_for_every_offered_gpu(dockerfile):
    env = " ".join(dockerfile.stages["gpu-build"].arguments("ENV"))
    arch_list = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', env).group(1)
    archs = {arch.removesuffix("+PTX") for arch in arch_list.split(";")}
    assert archs >= REQUIRED_CUDA_ARCHS
    assert arch_list.endswith("+PTX")  # newer GPUs JIT-compile the highest arch
    assert "FORCE_CUDA=1" in env.split()


def test_every_installed_package_is_pinned(dockerfile):
    packages = [
        *dockerfile.global_args["DETECTRON2_RUNTIME_DEPS"].split(),
        *dockerfile.global_args["BUILD_TOOLS"].split(),
        *dockerfile.global_args["CPU_RUNTIME_DEPS"].split(),
        *(
            f"{name}=={version}"
            for name, version in requirement_pins(CONTAINER_DIR / "requirements.txt").items()
        ),
    ]
    unpinned = [package for package in packages if not re.fullmatch(r"[\w.-]+==[\w.+-]+", package)]
    assert packages and not unpinned
    assert re.fullmatch(r"\d+\.\d+\.\d+", dockerfile.global_args["UV_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", dockerfile.global_args["PYTHON_VERSION"])


def test_serving_requirements_agree_with_the_dev_environment():
    serving = requirement_pins(CONTAINER_DIR / "requirements.txt")
    everything = (
        requirement_pins(REPO_ROOT / "requirements.txt")
        | serving
        | requirement_pins(REPO_ROOT / "requirements-dev.txt")
    )
    assert {name: everything[name] for name in serving} == serving


def test_dockerignore_keeps_local_clutter_out_of_the_image():
    patterns = set((CONTAINER_DIR / ".dockerignore").read_text().split())
    assert {"**/__pycache__", "**/*.pyc", "**/.pytest_cache", "**/*.egg-info", "tests"} <= patterns


def test_everything_the_dockerfile_copies_exists(dockerfile):
    sources = []
    for stage in dockerfile.stages.values():
        for copy in stage.arguments("COPY"):
            if "--from=" not in copy:
                sources.extend(part for part in copy.split()[:-1] if not part.startswith("--"))
    assert sources
    assert [source for source in sources if not (CONTAINER_DIR / source).exists()] == []
