"""container/bin/serve: CUDA forward-compatibility libraries are used only on an older driver branch."""

import os
import subprocess
from pathlib import Path

import pytest

SERVE = Path(__file__).resolve().parents[2] / "container" / "bin" / "serve"
COMPAT_DRIVER = "580.95.05"


def nvrm_line(version: str, open_module: bool = False) -> str:
    module = (
        "NVIDIA UNIX Open Kernel Module for x86_64" if open_module else "NVIDIA UNIX x86_64 Kernel Module"
    )
    return (
        f"NVRM version: {module}  {version}  Release Build  (dvs-builder@U16)  Tue Oct  8 03:22:07 UTC 2024\n"
    )


def run_serve(
    tmp_path: Path, *, host_driver: str | None, compat: bool = True, open_module: bool = False
) -> dict:
    """Run bin/serve with a stand-in `python` that reports what it was started with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_python = bin_dir / "python"
    fake_python.write_text('#!/bin/sh\nprintf "%s\\n" "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" "ARGS=$*"\n')
    fake_python.chmod(0o755)
    compat_dir = tmp_path / "compat"
    if compat:
        compat_dir.mkdir()
        (compat_dir / f"libcuda.so.{COMPAT_DRIVER}").touch()
        (compat_dir / "libcuda.so.1").symlink_to(f"libcuda.so.{COMPAT_DRIVER}")
    version_file = tmp_path / "version"
    if host_driver is not None:
        version_file.write_text(nvrm_line(host_driver, open_module) + "GCC version:  gcc version 7.3.1\n")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CUDA_COMPAT_DIR": str(compat_dir),
        "NVIDIA_DRIVER_VERSION_FILE": str(version_file),
        "LD_LIBRARY_PATH": "/usr/local/nvidia/lib64",
    }
    result = subprocess.run(
        [str(SERVE), "serve"], env=env, capture_output=True, text=True, check=True, timeout=30
    )
    report = dict(line.split("=", 1) for line in result.stdout.splitlines())
    report["compat_dir"] = str(compat_dir)
    return report


# Drivers of al2-ami-sagemaker-inference-gpu-3-1 (550) and -gpu-2-1 (535), which still run the image.
@pytest.mark.parametrize("host_driver", ["550.127.05", "535.216.03"])
@pytest.mark.parametrize("open_module", [False, True])
def test_an_older_driver_branch_gets_the_compat_libraries_first(tmp_path, open_module, host_driver):
    report = run_serve(tmp_path, host_driver=host_driver, open_module=open_module)

    assert report["LD_LIBRARY_PATH"] == f"{report['compat_dir']}:/usr/local/nvidia/lib64"
    assert report["ARGS"] == "-m inference_server serve"


# 580.65.06: an al2023-ami-sagemaker-inference-gpu-4-1 driver older than the compat libraries but of
# their branch, which runs CUDA 13 natively.
@pytest.mark.parametrize("host_driver", ["580.65.06", COMPAT_DRIVER, "580.105.08", "590.44.01"])
def test_a_host_driver_of_the_compat_libraries_branch_or_newer_is_left_alone(tmp_path, host_driver):
    assert run_serve(tmp_path, host_driver=host_driver)["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"


def test_no_gpu_driver_leaves_the_library_path_alone(tmp_path):
    assert run_serve(tmp_path, host_driver=None)["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"


def test_the_cpu_image_without_compat_libraries_is_left_alone(tmp_path):
    assert (
        run_serve(tmp_path, host_driver="535.54.03", compat=False)["LD_LIBRARY_PATH"]
        == "/usr/local/nvidia/lib64"
    )
