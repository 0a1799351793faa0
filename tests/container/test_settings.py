"""Settings load from a clean environment; every limit follows the mode; bad values stop the process
with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from inference_server.allocator import HeapPolicy
from inference_server.settings import (
    MIB,
    BatchRecordErrors,
    CpuPrecision,
    CpuRuntime,
    InferenceMode,
    MixedPrecision,
    Settings,
    SettingsError,
    environment_variables,
)

from .conftest import CONTAINER_DIR


def load(env: dict[str, str], **flags) -> Settings:
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings.from_env(os.environ, **flags)


def test_defaults_are_sagemaker_realtime():
    settings = load({})
    assert (settings.mode, settings.host, settings.port, settings.model_dir) == (
        InferenceMode.REALTIME,
        "0.0.0.0",
        8080,
        Path("/opt/ml/model"),
    )
    assert (settings.max_request_bytes, settings.request_timeout_s, settings.max_image_pixels) == (
        6 * MIB,
        60,
        8192**2,
    )
    assert not settings.record_errors_as_objects


@pytest.mark.parametrize(
    ("mode", "max_request_bytes", "timeout_s"),
    [
        ("realtime", 6 * MIB, 60),
        ("serverless", 4 * MIB, 60),
        ("async", 1024 * MIB, 3600),
        ("batch", 6 * MIB, 3600),
    ],
)
def test_limits_follow_the_mode(mode, max_request_bytes, timeout_s):
    settings = load({"INFERENCE_MODE": mode})
    assert (settings.mode, settings.max_request_bytes, settings.request_timeout_s) == (
        mode,
        max_request_bytes,
        timeout_s,
    )


def test_sagemaker_batch_means_batch_and_its_payload_limit_applies():
    settings = load(
        {"INFERENCE_MODE": "realtime", "SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"}
    )
    assert (settings.mode, settings.max_request_bytes) == (InferenceMode.BATCH, 20 * MIB)
    assert settings.execution_parameters(model_copies=4) == {
        "MaxConcurrentTransforms": 4,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 20,
    }
    assert settings.record_errors_as_objects


def test_model_copies_precision_and_queue_defaults():
    settings = load({})
    assert (settings.model_copies, settings.mixed_precision, settings.max_queue_depth) == (
        None,
        MixedPrecision.OFF,
        64,
    )
    chosen = load({"MODEL_COPIES": "2", "MIXED_PRECISION": "bf16", "MAX_QUEUE_DEPTH": "8"})
    assert (chosen.model_copies, chosen.mixed_precision, chosen.max_queue_depth) == (2, "bf16", 8)


def test_the_cpu_runtime_is_eager_unless_chosen():
    settings = load({})
    assert (settings.cpu_runtime, settings.cpu_precision) == (CpuRuntime.EAGER, CpuPrecision.FP32)
    chosen = load({"CPU_RUNTIME": "OpenVINO", "CPU_PRECISION": "bf16", "CPU_RUNTIME_CACHE_DIR": "/cache"})
    assert (chosen.cpu_runtime, chosen.cpu_precision) == (CpuRuntime.OPENVINO, CpuPrecision.BF16)
    assert chosen.cpu_runtime_cache_dir == Path("/cache")


def test_the_heap_keeps_freed_inference_memory_unless_told_to_release_it():
    assert load({}).heap_policy is HeapPolicy.RETAIN
    assert load({"HEAP_POLICY": "release"}).heap_policy is HeapPolicy.RELEASE


@pytest.mark.parametrize(
    ("mode", "refuses"), [("realtime", True), ("serverless", True), ("async", False), ("batch", False)]
)
def test_only_realtime_and_serverless_refuse_what_cannot_finish_in_time(mode, refuses):
    assert load({"INFERENCE_MODE": mode}).refuses_late_requests is refuses


def test_batch_payload_setting_does_not_change_other_modes():
    assert (
        load({"INFERENCE_MODE": "serverless", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "50"}).max_request_bytes
        == 4 * MIB
    )


def test_batch_record_errors_can_fail_the_job_instead():
    settings = load({"INFERENCE_MODE": "batch", "BATCH_RECORD_ERRORS": "fail"})
    assert settings.batch_record_errors is BatchRecordErrors.FAIL and not settings.record_errors_as_objects


def test_overrides_and_flag_precedence():
    env = {
        "SAGEMAKER_BIND_TO_PORT": "9000",
        "MODEL_DIR": "/models/a",
        "MAX_IMAGE_PIXELS": "1000",
        "REQUEST_TIMEOUT_S": "900",
    }
    settings = load(env)
    assert (settings.port, settings.model_dir, settings.max_image_pixels, settings.request_timeout_s) == (
        9000,
        Path("/models/a"),
        1000,
        900,
    )
    flagged = load(env, host="127.0.0.1", port=9100, model_dir="/models/b")
    assert (flagged.host, flagged.port, flagged.model_dir) == ("127.0.0.1", 9100, Path("/models/b"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"INFERENCE_MODE": "streaming"},
            "INFERENCE_MODE='streaming' is invalid; allowed: realtime | async | serverless | batch",
        ),
        ({"SAGEMAKER_BATCH": "yes"}, "SAGEMAKER_BATCH='yes' is invalid; allowed: true | false"),
        (
            {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "101"},
            "SAGEMAKER_MAX_PAYLOAD_IN_MB='101' is invalid; allowed: an integer in 1..100",
        ),
        (
            {"SAGEMAKER_BIND_TO_PORT": "http"},
            "SAGEMAKER_BIND_TO_PORT='http' is invalid; allowed: an integer in 1..65535",
        ),
        (
            {"REQUEST_TIMEOUT_S": "7200"},
            "REQUEST_TIMEOUT_S='7200' is invalid; allowed: an integer in 1..3600",
        ),
        ({"MAX_IMAGE_PIXELS": "0"}, "MAX_IMAGE_PIXELS='0' is invalid; allowed: an integer >= 1"),
        ({"BATCH_RECORD_ERRORS": "skip"}, "BATCH_RECORD_ERRORS='skip' is invalid; allowed: object | fail"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is invalid; allowed: debug | info | warning | error"),
        ({"MODEL_COPIES": "0"}, "MODEL_COPIES='0' is invalid; allowed: an integer in 1..64"),
        ({"MODEL_COPIES": "all"}, "MODEL_COPIES='all' is invalid; allowed: an integer in 1..64"),
        ({"MIXED_PRECISION": "fp8"}, "MIXED_PRECISION='fp8' is invalid; allowed: off | fp16 | bf16"),
        ({"CPU_RUNTIME": "onnx"}, "CPU_RUNTIME='onnx' is invalid; allowed: eager | openvino"),
        ({"CPU_PRECISION": "int8"}, "CPU_PRECISION='int8' is invalid; allowed: fp32 | bf16"),
        ({"MAX_QUEUE_DEPTH": "0"}, "MAX_QUEUE_DEPTH='0' is invalid; allowed: an integer >= 1"),
        ({"HEAP_POLICY": "trim"}, "HEAP_POLICY='trim' is invalid; allowed: retain | release"),
    ],
)
def test_invalid_values_name_the_variable_and_the_allowed_values(env, message):
    with pytest.raises(SettingsError, match=f"^{message.replace('|', '[|]').replace('.', '[.]')}$"):
        load(env)


def test_every_invalid_value_is_reported_at_once():
    with pytest.raises(SettingsError) as raised:
        load({"INFERENCE_MODE": "x", "REQUEST_TIMEOUT_S": "-1", "MODEL_COPIES": "-2"})
    assert str(raised.value).count("is invalid") == 3


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference_server", *args],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(CONTAINER_DIR), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_exits_with_one_readable_line_for_a_bad_setting(tmp_path):
    result = run_cli(["serve", "--model-dir", str(tmp_path)], {"INFERENCE_MODE": "streaming"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "inference_server: error: INFERENCE_MODE='streaming' is invalid; "
        "allowed: realtime | async | serverless | batch"
    ]


def test_cli_exits_with_one_readable_line_for_a_missing_model_dir(tmp_path):
    result = run_cli(["--model-dir", str(tmp_path / "absent")], {})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"inference_server: error: model directory {tmp_path / 'absent'} does not exist"
    ]


def test_cli_rejects_an_unknown_command(tmp_path):
    result = run_cli(["train", "--model-dir", str(tmp_path)], {})
    assert result.returncode == 2 and "invalid choice: 'train'" in result.stderr


def test_serve_script_execs_the_server_and_accepts_sagemakers_serve_argument(tmp_path):
    # SageMaker runs `docker run IMAGE serve`; the image's ENTRYPOINT is this script.
    result = subprocess.run(
        [str(CONTAINER_DIR / "bin" / "serve"), "serve", "--model-dir", str(tmp_path / "absent")],
        env={
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(CONTAINER_DIR),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"inference_server: error: model directory {tmp_path / 'absent'} does not exist"
    ]


def test_every_listed_environment_variable_is_read_and_validated():
    """The list the docs and the test servers' clean environment come from names only variables the
    parser really reads: each one's nonsense value is refused, naming it."""
    names = environment_variables()
    assert len(names) == len(set(names)) and {"INFERENCE_MODE", "HEAP_POLICY", "LOG_FORMAT"} <= set(names)
    for name in names:
        if name in ("MODEL_DIR", "CPU_RUNTIME_CACHE_DIR"):
            continue  # any path is a valid directory name
        with pytest.raises(SettingsError, match=f"{name}="):
            Settings.from_env({name: "\x7fnot-a-valid-value"})
