"""Configuration: defaults, overrides, and the exact message each invalid value produces."""

import re
import tarfile
from pathlib import Path

import pytest

from sagemaker_constructs.settings import (
    PLACEHOLDER_MODEL_DATA,
    AppConfig,
    ConfigError,
    load_config,
)
from tests.synthesis import REPO_ROOT

from .config_helpers import load, problem


def test_defaults_synthesize_anywhere_and_match_the_documented_values():
    config = load_config(env=None, model_data=None, config_dir=REPO_ROOT / "config", base_dir=REPO_ROOT)

    assert config.model.data == PLACEHOLDER_MODEL_DATA
    assert config.model.approval_status == "Approved"
    assert config.package_group_name == "detectron2-mask-rcnn"
    assert (config.realtime.instance_type, config.realtime.initial_instance_count) == ("ml.g5.xlarge", 1)
    assert config.realtime.scaling is not None and config.async_.scaling is not None
    assert (config.realtime.scaling.min_capacity, config.realtime.scaling.max_capacity) == (1, 2)
    assert config.realtime.scaling.target_invocations_per_instance == 100
    assert config.async_.instance_type == "ml.g5.xlarge"
    assert (config.async_.scaling.min_capacity, config.async_.scaling.max_capacity) == (0, 2)
    # Two per model copy: ml.g5.xlarge has one GPU.
    assert config.async_.max_concurrent_invocations_per_instance is None
    assert config.async_.concurrent_invocations_per_instance == 2
    assert (config.serverless.memory_size_mb, config.serverless.max_concurrency) == (6144, 5)
    assert config.serverless.provisioned_concurrency is None
    assert config.batch.instance_type == "ml.g4dn.xlarge"
    assert all(mode.enabled for mode in (config.realtime, config.async_, config.serverless, config.batch))


@pytest.mark.parametrize("env", sorted(p.stem for p in (REPO_ROOT / "config").glob("*.json")))
def test_shipped_environment_files_are_valid(env):
    config = load_config(env=env, model_data=None, config_dir=REPO_ROOT / "config", base_dir=REPO_ROOT)

    assert config.name != AppConfig().name, "each environment needs its own stack prefix"


def test_environment_file_overrides_only_what_it_names(tmp_path):
    config = load(tmp_path, {"realtime": {"instance_type": "ml.g4dn.xlarge"}, "batch": {"enabled": False}})

    assert config.realtime.instance_type == "ml.g4dn.xlarge"
    assert config.realtime.scaling == AppConfig().realtime.scaling
    assert not config.batch.enabled
    assert config.async_ == AppConfig().async_


def test_each_mode_can_be_switched_off(tmp_path):
    off = {"enabled": False}
    config = load(tmp_path, {"realtime": off, "async": off, "serverless": off, "batch": off})

    assert not any(m.enabled for m in (config.realtime, config.async_, config.serverless, config.batch))


def test_scaling_can_be_disabled_with_null(tmp_path):
    config = load(tmp_path, {"realtime": {"instance_type": "ml.t2.medium", "scaling": None}})

    assert config.realtime.scaling is None


def make_tarball(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz"):
        pass
    return path


def test_model_data_accepts_a_local_tarball_relative_to_the_repository(tmp_path):
    tarball = make_tarball(tmp_path / "models" / "model.tar.gz")

    config = load(tmp_path, {"model": {"data": "models/model.tar.gz"}})

    assert config.model.data == str(tarball.resolve())
    assert not config.model.is_s3_uri


def test_model_data_context_overrides_the_environment_file(tmp_path):
    config = load(
        tmp_path, {"model": {"data": "s3://bucket-a/a.tar.gz"}}, model_data="s3://bucket-b/model.tar.gz"
    )

    assert config.model.data == "s3://bucket-b/model.tar.gz"
    assert config.model.is_s3_uri


@pytest.mark.parametrize(
    "data", ["model.zip", "missing.tar.gz", "s3://", "s3://bucket", "s3://Bad_Bucket/m.tar.gz"]
)
def test_model_data_that_is_neither_a_local_tarball_nor_an_s3_uri(tmp_path, data):
    (tmp_path / "model.zip").write_bytes(b"not a tarball")

    problem(
        tmp_path,
        {"model": {"data": data}},
        "model.data: must be an s3://bucket/key URI or the path of an existing local .tar.gz file "
        f"(got {data!r})",
    )


@pytest.mark.parametrize("memory", [512, 5000, 8192])
def test_serverless_memory_must_be_a_supported_size(tmp_path, memory):
    problem(
        tmp_path,
        {"serverless": {"memory_size_mb": memory}},
        f"serverless.memory_size_mb: must be one of 1024, 2048, 3072, 4096, 5120, 6144 (got {memory})",
    )


@pytest.mark.parametrize("concurrency", [0, 201])
def test_serverless_max_concurrency_range(tmp_path, concurrency):
    problem(
        tmp_path,
        {"serverless": {"max_concurrency": concurrency}},
        f"serverless.max_concurrency: must be between 1 and 200 (got {concurrency})",
    )


def test_provisioned_concurrency_cannot_exceed_max_concurrency(tmp_path):
    problem(
        tmp_path,
        {"serverless": {"max_concurrency": 5, "provisioned_concurrency": 6}},
        "serverless.provisioned_concurrency: must not exceed max_concurrency (5) (got 6)",
    )


def test_provisioned_concurrency_scaling_needs_provisioned_concurrency(tmp_path):
    problem(
        tmp_path,
        {"serverless": {"provisioned_concurrency_scaling": {"max_capacity": 2}}},
        "serverless.provisioned_concurrency_scaling: needs provisioned_concurrency, the scaling minimum",
    )


def test_provisioned_concurrency_scaling_stays_within_max_concurrency(tmp_path):
    problem(
        tmp_path,
        {
            "serverless": {
                "max_concurrency": 5,
                "provisioned_concurrency": 2,
                "provisioned_concurrency_scaling": {"max_capacity": 6},
            }
        },
        "serverless.provisioned_concurrency_scaling.max_capacity: must be between "
        "provisioned_concurrency (2) and max_concurrency (5) (got 6)",
    )


@pytest.mark.parametrize("instance_type", ["ml.g5.xlarge", "ml.p3.2xlarge"])
def test_serverless_rejects_a_gpu_instance_type(tmp_path, instance_type):
    problem(
        tmp_path,
        {"serverless": {"instance_type": instance_type}},
        "serverless.instance_type: serverless inference has no instance type and no GPU: it runs the cpu "
        f"image, sized by memory_size_mb (1024, 2048, 3072, 4096, 5120, 6144) (got {instance_type!r})",
    )


def test_realtime_variant_cannot_scale_to_zero(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"scaling": {"min_capacity": 0}}},
        "realtime.scaling.min_capacity: must be at least 1 for a real-time endpoint: only async endpoints "
        "(or real-time inference components) can scale to zero (got 0)",
    )


def test_async_may_scale_to_zero(tmp_path):
    scaling = load(tmp_path, {"async": {"scaling": {"min_capacity": 0}}}).async_.scaling
    assert scaling is not None and scaling.min_capacity == 0


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_burstable_instances_cannot_be_autoscaled(tmp_path, mode):
    problem(
        tmp_path,
        {mode: {"instance_type": "ml.t2.medium"}},
        f"{mode}.instance_type: burstable ml.t* instances cannot be autoscaled: choose a non-burstable "
        "type or set scaling to null (got 'ml.t2.medium')",
    )


@pytest.mark.parametrize("invocations", [0, 1001])
def test_async_max_concurrent_invocations_range(tmp_path, invocations):
    problem(
        tmp_path,
        {"async": {"max_concurrent_invocations_per_instance": invocations}},
        f"async.max_concurrent_invocations_per_instance: must be between 1 and 1000 (got {invocations})",
    )


def test_scaling_minimum_cannot_exceed_maximum(tmp_path):
    problem(
        tmp_path,
        {"async": {"scaling": {"min_capacity": 3, "max_capacity": 2}}},
        "async.scaling.max_capacity: must be at least min_capacity (3) (got 2)",
    )


@pytest.mark.parametrize(
    ("instance_type", "message"),
    [
        ("g5.xlarge", "must look like ml.<family>.<size>, e.g. ml.g5.xlarge (got 'g5.xlarge')"),
        (
            "ml.inf2.xlarge",
            "must be a GPU (ml.g*, ml.p*) or CPU instance type: Inferentia/Trainium need a Neuron build "
            "this project does not ship (got 'ml.inf2.xlarge')",
        ),
        (
            "ml.p3.2xlarge",
            "must not be ml.p2/ml.p3: the GPU image is built on CUDA 13, which supports T4 (ml.g4dn) and "
            "newer GPUs only (got 'ml.p3.2xlarge')",
        ),
    ],
)
def test_instance_type_shape(tmp_path, instance_type, message):
    problem(tmp_path, {"batch": {"instance_type": instance_type}}, f"batch.instance_type: {message}")


def test_unknown_fields_are_named_with_the_allowed_ones(tmp_path):
    problem(
        tmp_path,
        {"serverless": {"memory": 2048}},
        "serverless.memory: unknown field; allowed: enabled, model_version, memory_size_mb, max_concurrency, "
        "provisioned_concurrency, provisioned_concurrency_scaling, rollout",
    )


def test_approval_status_names_allowed_values(tmp_path):
    problem(
        tmp_path,
        {"model": {"approval_status": "Yes"}},
        "model.approval_status: Input should be 'Approved', 'PendingManualApproval' or 'Rejected' "
        "(got 'Yes')",
    )


def test_every_problem_is_reported_at_once_naming_the_source(tmp_path):
    overrides = {
        "serverless": {"memory_size_mb": 5000},
        "realtime": {"scaling": {"min_capacity": 0}},
        "async": {"max_concurrent_invocations_per_instance": 0},
        "model": {"data": "model.zip"},
    }
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, overrides)

    assert str(raised.value).startswith(f"invalid configuration ({tmp_path.name}/test.json):\n")
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "model.data",
        "realtime.scaling.min_capacity",
        "async.max_concurrent_invocations_per_instance",
        "serverless.memory_size_mb",
    ]


def test_unknown_environment_lists_the_available_ones(tmp_path):
    (tmp_path / "dev.json").write_text("{}")
    (tmp_path / "prod.json").write_text("{}")

    with pytest.raises(
        ConfigError, match=re.escape(f"env: no {tmp_path.name}/staging.json; available: dev, prod")
    ):
        load_config(env="staging", model_data=None, config_dir=tmp_path, base_dir=tmp_path)


def test_environment_file_must_be_json(tmp_path):
    (tmp_path / "broken.json").write_text("{realtime: }")

    with pytest.raises(
        ConfigError, match=r"not valid JSON: Expecting property name enclosed in double quotes"
    ):
        load_config(env="broken", model_data=None, config_dir=tmp_path, base_dir=tmp_path)


def test_numbers_are_not_coerced_from_strings(tmp_path):
    problem(
        tmp_path,
        {"serverless": {"max_concurrency": "5"}},
        "serverless.max_concurrency: Input should be a valid integer (got '5')",
    )


def test_gpu_ami_version_names_the_allowed_values(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"inference_ami_version": "al2-ami-sagemaker-inference-gpu-2"}},
        "realtime.inference_ami_version: Input should be 'al2023-ami-sagemaker-inference-gpu-4-1', "
        "'al2-ami-sagemaker-inference-gpu-3-1' or 'al2-ami-sagemaker-inference-gpu-2-1' "
        "(got 'al2-ami-sagemaker-inference-gpu-2')",
    )


def test_the_older_gpu_amis_stay_selectable(tmp_path):
    config = load(tmp_path, {"async": {"inference_ami_version": "al2-ami-sagemaker-inference-gpu-2-1"}})

    assert config.async_.inference_ami_version == "al2-ami-sagemaker-inference-gpu-2-1"
    assert config.realtime.inference_ami_version == "al2023-ami-sagemaker-inference-gpu-4-1"


@pytest.mark.parametrize(
    "instance_type", ["ml.c7g.xlarge", "ml.m7g.large", "ml.r7g.2xlarge", "ml.g5g.xlarge"]
)
def test_graviton_instance_types_are_rejected_naming_the_field(tmp_path, instance_type):
    problem(
        tmp_path,
        {"async": {"instance_type": instance_type}},
        "async.instance_type: must be an x86_64 instance type: Graviton (e.g. ml.c7g, ml.m7g, ml.r7g, "
        "ml.g5g) and Grace (e.g. ml.p6e-gb200) hosts are arm64 and the images are built for amd64 "
        f"(got {instance_type!r})",
    )


def test_grace_instance_types_are_rejected_naming_the_field(tmp_path):
    with pytest.raises(
        ConfigError, match=r"batch.instance_type: must be an x86_64 instance type: .*ml.p6e-gb200"
    ):
        load(tmp_path, {"batch": {"instance_type": "ml.p6e-gb200.36xlarge"}})


@pytest.mark.parametrize("seconds", [59, 3601])
def test_async_cold_start_range(tmp_path, seconds):
    problem(
        tmp_path,
        {"async": {"scaling": {"cold_start_seconds": seconds}}},
        f"async.scaling.cold_start_seconds: must be between 60 and 3600 (got {seconds})",
    )


@pytest.mark.parametrize(
    "field", ["container_startup_health_check_timeout_seconds", "model_data_download_timeout_seconds"]
)
def test_instance_variant_timeouts_range(tmp_path, field):
    problem(tmp_path, {"realtime": {field: 30}}, f"realtime.{field}: must be between 60 and 3600 (got 30)")


def test_async_object_expiry_days(tmp_path):
    config = load(tmp_path, {"async": {"expire_after_days": {"input": 1, "output": None}}})

    assert (config.async_.expire_after_days.input, config.async_.expire_after_days.output) == (1, None)
    assert config.async_.expire_after_days.failure == 30
    problem(
        tmp_path,
        {"async": {"expire_after_days": {"failure": 0}}},
        "async.expire_after_days.failure: must be between 1 and 3650 (got 0)",
    )


@pytest.mark.parametrize(
    ("instance_type", "invocations"),
    [("ml.g5.xlarge", 2), ("ml.g5.12xlarge", 8), ("ml.p4d.24xlarge", 16), ("ml.c5.xlarge", 2)],
)
def test_async_concurrency_defaults_to_two_per_model_copy(tmp_path, instance_type, invocations):
    config = load(tmp_path, {"async": {"instance_type": instance_type}})
    assert config.async_.concurrent_invocations_per_instance == invocations


def test_async_concurrency_set_in_config_wins(tmp_path):
    config = load(
        tmp_path, {"async": {"instance_type": "ml.g5.12xlarge", "max_concurrent_invocations_per_instance": 3}}
    )
    assert config.async_.concurrent_invocations_per_instance == 3
