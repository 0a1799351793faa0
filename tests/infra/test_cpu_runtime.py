"""model.cpu_runtime: what runs the networks of the CPU Models, validated at synth, set on each CPU Model."""

import io
import tarfile
from pathlib import Path
from typing import get_args

import pytest
from aws_cdk.assertions import Annotations, Match

import d2sm_contract as contract
from inference_server.artifact_format import OPENVINO_DIR, OPENVINO_MANIFEST
from inference_server.settings import CpuPrecision, CpuRuntime, Settings
from sagemaker_constructs.settings import CpuRuntimeConfig
from stacks.shared import UNPACKAGED_CPU_RUNTIME
from tests.synthesis import synthesize_config

from .config_helpers import load, problem

OPENVINO = {"cpu_runtime": {"runtime": "openvino"}}
OPENVINO_BF16 = {"cpu_runtime": {"runtime": "openvino", "precision": "bf16"}}


def container_environments(synth, key: str) -> dict[str, dict[str, str]]:
    return {
        logical_id: model["Properties"]["PrimaryContainer"]["Environment"]
        for logical_id, model in synth.resources(key, "AWS::SageMaker::Model").items()
    }


def test_eager_is_the_default_and_sets_nothing(tmp_path):
    config = load(tmp_path)

    assert config.model.cpu_runtime == CpuRuntimeConfig(runtime="eager", precision="fp32")
    assert config.model.cpu_runtime.environment() == {}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_container_reads_the_variables_an_openvino_model_gets(precision):
    environment = CpuRuntimeConfig(runtime="openvino", precision=precision).environment()

    assert set(environment) == {contract.CPU_RUNTIME_ENV, contract.CPU_PRECISION_ENV}
    settings = Settings.from_env(environment)
    assert (settings.cpu_runtime, settings.cpu_precision) == (CpuRuntime.OPENVINO, CpuPrecision(precision))


def test_the_configuration_offers_exactly_the_runtimes_and_precisions_the_container_knows():
    fields = CpuRuntimeConfig.model_fields

    assert set(get_args(fields["runtime"].annotation)) == {runtime.value for runtime in CpuRuntime}
    assert set(get_args(fields["precision"].annotation)) == {precision.value for precision in CpuPrecision}


def test_the_runtime_names_its_allowed_values(tmp_path):
    problem(
        tmp_path,
        {"model": {"cpu_runtime": {"runtime": "onnx"}}},
        "model.cpu_runtime.runtime: Input should be 'eager' or 'openvino' (got 'onnx')",
    )


def test_a_precision_for_eager_is_refused(tmp_path):
    problem(
        tmp_path,
        {"model": {"cpu_runtime": {"precision": "bf16"}}},
        "model.cpu_runtime.precision: applies to runtime 'openvino' only (eager runs the weights in fp32, "
        "as trained): set runtime to 'openvino' or precision to 'fp32' (got 'bf16')",
    )


def test_bf16_is_refused_where_a_cpu_model_may_lack_it(tmp_path):
    problem(
        tmp_path,
        {"model": OPENVINO_BF16, "async": {"instance_type": "ml.c6i.xlarge"}},
        "model.cpu_runtime.precision: bf16 runs only on CPUs with bfloat16 (ml.c7i, ml.m7i, ml.r7i and the "
        "8i families) and the container refuses to start elsewhere; these CPU Models may lack it: "
        "ml.c6i.xlarge (async.instance_type), serverless (no stated CPU): use 'fp32', or move them to "
        "those families (got 'bf16')",
    )


@pytest.mark.parametrize(
    ("overrides", "place"),
    [
        ({"batch": {"instance_type": "ml.m5.xlarge"}}, "ml.m5.xlarge (batch.instance_type)"),
        (
            {"realtime": {"instance_pools": ["ml.g5.xlarge", "ml.c5.2xlarge"]}},
            "ml.c5.2xlarge (realtime.instance_pools)",
        ),
        (
            {"realtime": {"shadow": {"instance_type": "ml.c6i.2xlarge"}, "scaling": None}},
            "ml.c6i.2xlarge (realtime.shadow.instance_type)",
        ),
        (
            {
                "realtime": {
                    "variants": [
                        {"name": "Gpu", "weight": 1.0},
                        {"name": "Cpu", "weight": 1.0, "instance_type": "ml.m6i.xlarge"},
                    ],
                    "scaling": None,
                }
            },
            "ml.m6i.xlarge (realtime.variants.1.instance_type)",
        ),
    ],
)
def test_bf16_names_each_cpu_model_that_may_lack_it(tmp_path, overrides, place):
    with pytest.raises(ValueError, match="model.cpu_runtime.precision") as raised:
        load(tmp_path, {"model": OPENVINO_BF16, "serverless": {"enabled": False}, **overrides})

    assert f"may lack it: {place}: use 'fp32'" in str(raised.value)


def test_bf16_is_accepted_where_every_cpu_model_has_it(tmp_path):
    config = load(
        tmp_path,
        {
            "model": OPENVINO_BF16,
            "serverless": {"enabled": False},
            "async": {"instance_type": "ml.c7i.2xlarge"},
            "batch": {"instance_type": "ml.m7i.xlarge"},
        },
    )

    # The real-time endpoint stays on its GPU, whose Model the option does not touch.
    assert config.deployed_cpu_instance_types() == {
        "ml.c7i.2xlarge": "async.instance_type",
        "ml.m7i.xlarge": "batch.instance_type",
    }
    assert config.model.cpu_runtime.precision == "bf16"


def test_openvino_is_set_on_every_cpu_model_and_on_no_gpu_model(tmp_path):
    synth = synthesize_config(
        tmp_path / "cdk.out",
        {
            "model": OPENVINO,
            "realtime": {"instance_pools": ["ml.g5.xlarge", "ml.c7i.2xlarge"]},
            "async": {"instance_type": "ml.c7i.2xlarge"},
        },
    )
    openvino = {contract.CPU_RUNTIME_ENV: "openvino", contract.CPU_PRECISION_ENV: "fp32"}

    realtime = container_environments(synth, "realtime")
    (gpu_id,) = [k for k in realtime if not k.startswith("CpuModel")]
    (cpu_id,) = [k for k in realtime if k.startswith("CpuModel")]
    assert realtime[gpu_id] == {contract.INFERENCE_MODE_ENV: "realtime"}
    assert realtime[cpu_id] == {contract.INFERENCE_MODE_ENV: "realtime", **openvino}
    assert list(container_environments(synth, "async").values()) == [
        {contract.INFERENCE_MODE_ENV: "async", **openvino}
    ]
    assert list(container_environments(synth, "serverless").values()) == [
        {contract.INFERENCE_MODE_ENV: "serverless", **openvino}
    ]
    # The default batch instance is a GPU one.
    assert list(container_environments(synth, "batch").values()) == [{contract.INFERENCE_MODE_ENV: "batch"}]


def test_the_contract_names_the_manifest_the_container_writes():
    assert f"{OPENVINO_DIR}/{OPENVINO_MANIFEST}" == contract.ARTIFACT_OPENVINO_MANIFEST


def tarball(path: Path, members: list[str]) -> str:
    with tarfile.open(path, "w:gz") as archive:
        for name in members:
            info = tarfile.TarInfo(name)
            info.size = 2
            archive.addfile(info, io.BytesIO(b"{}"))
    return str(path)


def unpackaged_warnings(synth) -> list:
    return Annotations.from_stack(synth.stacks.shared).find_warning(
        "*", Match.string_like_regexp(f"model.data has no {contract.ARTIFACT_OPENVINO_MANIFEST}")
    )


@pytest.mark.parametrize(
    ("members", "runtime", "warned"),
    [
        (["metadata.json", "model_final.pth"], "openvino", True),
        (["./metadata.json", "./model_final.pth", "./openvino/manifest.json"], "openvino", False),
        (["metadata.json", "model_final.pth"], "eager", False),
    ],
)
def test_synth_warns_when_a_local_model_lacks_the_conversion(tmp_path, members, runtime, warned):
    data = tarball(tmp_path / "model.tar.gz", members)
    overrides = {
        "model": {"data": data, "cpu_runtime": {"runtime": runtime}},
        **{mode: {"enabled": False} for mode in ("realtime", "async", "batch")},
    }

    synth = synthesize_config(tmp_path / "cdk.out", overrides)

    found = unpackaged_warnings(synth)
    assert len(found) == int(warned)
    if warned:
        assert UNPACKAGED_CPU_RUNTIME in found[0].entry.data
        assert "--cpu-runtime openvino" in found[0].entry.data


def test_an_s3_model_is_not_read_at_synth(tmp_path):
    synth = synthesize_config(tmp_path / "cdk.out", {"model": OPENVINO})

    assert unpackaged_warnings(synth) == []
