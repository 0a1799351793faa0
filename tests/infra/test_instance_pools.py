"""Instance pools (config/capacity-fallback.json and variations): InstancePools with priorities,
the CPU Model behind a CPU pool, endpoint names that follow the pool list, per-type dashboard
graphs, every refused combination's message, and the before/after diff of a pool change."""

import json

import pytest
from cfnlint.api import ManualArgs, lint_by_config
from syrupy.extensions.json import JSONSnapshotExtension

from sagemaker_constructs.endpoint import MAX_ENDPOINT_NAME_LENGTH, endpoint_name
from sagemaker_constructs.settings import ConfigError, RealtimeConfig
from tests.synthesis import cdk_diff, needs_cdk_cli, redact_image_hashes, synthesize_config

from .cfn import flatten
from .config_helpers import load, problem

GPU_AMI = RealtimeConfig().inference_ami_version
REALTIME_POOLS = ["ml.g6.xlarge", "ml.g5.xlarge", "ml.g4dn.xlarge"]
ASYNC_POOLS = [*REALTIME_POOLS, "ml.c5.4xlarge"]


@pytest.fixture(scope="module")
def fallback(shipped):
    return shipped("capacity-fallback")


@pytest.mark.parametrize("key", ["shared", "realtime", "async"])
def test_template_snapshot(fallback, key, snapshot):
    assert redact_image_hashes(fallback, fallback.template(key)) == snapshot.use_extension(
        JSONSnapshotExtension
    )


def variant(synth, key) -> dict:
    _, config = synth.only(key, "AWS::SageMaker::EndpointConfig")
    (only,) = config["Properties"]["ProductionVariants"]
    return only


@pytest.mark.parametrize(
    ("key", "types", "timeout"), [("realtime", REALTIME_POOLS, 900), ("async", ASYNC_POOLS, 1200)]
)
def test_the_variant_lists_its_pools_by_priority_with_the_timeout_and_no_instance_type(
    fallback, key, types, timeout
):
    pooled = variant(fallback, key)

    assert "InstanceType" not in pooled
    assert [(pool["InstanceType"], pool["Priority"]) for pool in pooled["InstancePools"]] == [
        (instance_type, priority) for priority, instance_type in enumerate(types, start=1)
    ]
    assert pooled["VariantInstanceProvisionTimeoutInSeconds"] == timeout
    # GPU pools need the newer driver; the AMI is one value per variant.
    assert pooled["InferenceAmiVersion"] == GPU_AMI


def test_gpu_pools_run_the_variants_gpu_model_and_the_cpu_pool_a_cpu_model(fallback):
    pooled = variant(fallback, "async")
    models = fallback.resources("async", "AWS::SageMaker::Model")
    model_id = pooled["ModelName"]["Fn::GetAtt"][0]
    (cpu_pool,) = [pool for pool in pooled["InstancePools"] if "ModelNameOverride" in pool]
    cpu_model_id = cpu_pool["ModelNameOverride"]["Fn::GetAtt"][0]

    assert cpu_pool["InstanceType"] == "ml.c5.4xlarge"
    assert sorted(models) == sorted([model_id, cpu_model_id])
    gpu_container = models[model_id]["Properties"]["PrimaryContainer"]
    cpu_container = models[cpu_model_id]["Properties"]["PrimaryContainer"]
    assert "InferenceSpecificationName" not in gpu_container
    assert cpu_container["InferenceSpecificationName"] == "cpu"
    # The same registered version and inference mode: only the image differs.
    assert cpu_container["ModelPackageName"] == gpu_container["ModelPackageName"]
    assert cpu_container["Environment"] == gpu_container["Environment"] == {"INFERENCE_MODE": "async"}
    assert models[cpu_model_id]["Properties"]["EnableNetworkIsolation"] is True


def test_an_all_gpu_pool_list_needs_no_second_model(fallback):
    assert all("ModelNameOverride" not in pool for pool in variant(fallback, "realtime")["InstancePools"])
    assert len(fallback.resources("realtime", "AWS::SageMaker::Model")) == 1


@pytest.mark.parametrize(("key", "pools"), [("realtime", REALTIME_POOLS), ("async", ASYNC_POOLS)])
def test_the_autoscaled_endpoint_is_named_after_its_pool_list(fallback, key, pools):
    _, endpoint = fallback.only(key, "AWS::SageMaker::Endpoint")
    _, target = fallback.only(key, "AWS::ApplicationAutoScaling::ScalableTarget")
    name = endpoint["Properties"]["EndpointName"]

    stack = f"Detectron2Fallback-{key.title()}"
    assert name == endpoint_name(stack, instance_pools=pools)
    assert name.startswith(f"{stack}-g6-xlarge-") and len(name) == len(stack) + len("-g6-xlarge-") + 8
    assert target["Properties"]["ResourceId"] == f"endpoint/{name}/variant/AllTraffic"
    outputs = fallback.template(key)["Outputs"]
    assert outputs["EndpointName"]["Value"] == name
    assert outputs["InstancePools"]["Value"] == ",".join(pools)


def test_async_concurrency_is_the_one_value_every_pool_shares(fallback):
    _, config = fallback.only("async", "AWS::SageMaker::EndpointConfig")
    client = config["Properties"]["AsyncInferenceConfig"]["ClientConfig"]

    # One GPU on each GPU type, one model copy on the CPU type: two per instance everywhere.
    assert client["MaxConcurrentInvocationsPerInstance"] == 2


def test_the_dashboard_shows_instances_and_latency_per_pool_type(fallback):
    _, dashboard = fallback.only("shared", "AWS::CloudWatch::Dashboard")
    body = json.loads(flatten(dashboard["Properties"]["DashboardBody"]))
    widgets = {w["properties"].get("title"): w["properties"] for w in body["widgets"]}

    for title, stack, types in (
        ("Real-time", "Realtime", REALTIME_POOLS),
        ("Async", "Async", ASYNC_POOLS),
    ):
        name = endpoint_name(f"Detectron2Fallback-{stack}", instance_pools=types)
        instances = [
            as_metric(m) for m in widgets[f"{title}: instances per type (priority order)"]["metrics"]
        ]
        assert instances == [
            (
                "/aws/sagemaker/Endpoints",
                "CPUUtilization",
                {"EndpointName": name, "VariantName": "AllTraffic", "InstanceType": instance_type},
                "SampleCount",
            )
            for instance_type in types
        ]
        latency = [as_metric(m) for m in widgets[f"{title}: model latency p99 per type (µs)"]["metrics"]]
        assert latency == [
            (
                "AWS/SageMaker",
                "ModelLatency",
                {"EndpointName": name, "VariantName": "AllTraffic", "InstanceType": instance_type},
                "p99",
            )
            for instance_type in types
        ]


def as_metric(widget_metric: list) -> tuple[str, str, dict, str]:
    """A dashboard metric array (namespace, name, dimension pairs..., options) as a tuple."""
    namespace, name, *pairs, options = widget_metric
    return namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), options["stat"]


def test_the_default_dashboard_has_no_per_type_graphs(synth):
    _, dashboard = synth.only("shared", "AWS::CloudWatch::Dashboard")

    assert "per type" not in flatten(dashboard["Properties"]["DashboardBody"])
    assert "InstancePools" not in synth.template("realtime")["Outputs"]


def test_cfn_lint_finds_nothing_in_the_capacity_fallback_templates(fallback):
    templates = sorted(str(path) for path in fallback.outdir.glob("*.template.json"))

    assert len(templates) == 3
    assert [str(match) for match in lint_by_config(ManualArgs(templates=templates))] == []


def test_cdk_nag_reports_nothing_on_the_capacity_fallback_stacks(fallback):
    report = json.loads((fallback.outdir / "validation-report.json").read_text())

    assert all(not plugin.get("violations") for plugin in report["pluginReports"])


@pytest.mark.parametrize(
    ("pools", "other_model", "specification"),
    [
        (["ml.g5.xlarge", "ml.m5.xlarge"], "CpuModel", "cpu"),
        # A CPU first choice with a GPU fallback: the variant's model is the CPU one.
        (["ml.m5.xlarge", "ml.g5.xlarge"], "GpuModel", None),
    ],
)
def test_a_realtime_pool_list_across_gpu_and_cpu_overrides_the_model_of_the_other_kind(
    tmp_path, pools, other_model, specification
):
    synth = synthesize_config(
        tmp_path / "cdk.out",
        {
            "realtime": {"instance_pools": pools},
            "async": {"enabled": False},
            "serverless": {"enabled": False},
            "batch": {"enabled": False},
        },
    )
    pooled = variant(synth, "realtime")
    models = synth.resources("realtime", "AWS::SageMaker::Model")
    (override_id,) = [k for k in models if k.startswith(other_model)]

    assert pooled["InstancePools"][0] == {"InstanceType": pools[0], "Priority": 1}
    assert pooled["InstancePools"][1]["ModelNameOverride"] == {"Fn::GetAtt": [override_id, "ModelName"]}
    container = models[override_id]["Properties"]["PrimaryContainer"]
    assert container.get("InferenceSpecificationName") == specification
    assert container["Environment"] == {"INFERENCE_MODE": "realtime"}
    assert pooled["InferenceAmiVersion"] == GPU_AMI
    templates = [str(path) for path in synth.outdir.glob("*Realtime.template.json")]
    assert [str(match) for match in lint_by_config(ManualArgs(templates=templates))] == []


def test_an_all_cpu_pool_list_gets_no_gpu_ami(tmp_path):
    synth = synthesize_config(
        tmp_path / "cdk.out",
        {
            "async": {"instance_pools": ["ml.c5.4xlarge", "ml.m5.4xlarge"]},
            "realtime": {"enabled": False},
            "serverless": {"enabled": False},
            "batch": {"enabled": False},
        },
    )
    pooled = variant(synth, "async")

    assert "InferenceAmiVersion" not in pooled and "InstanceType" not in pooled
    (model,) = synth.resources("async", "AWS::SageMaker::Model").values()
    assert model["Properties"]["PrimaryContainer"]["InferenceSpecificationName"] == "cpu"


# --- Inference components on pools ---------------------------------------------------------------


def test_an_inference_component_endpoint_takes_gpu_pools_with_one_model(tmp_path):
    synth = synthesize_config(
        tmp_path / "cdk.out",
        {
            "realtime": {
                "instance_pools": ["ml.g6.xlarge", "ml.g5.xlarge"],
                "scaling": None,
                "inference_components": {"max_instance_count": 2},
            },
            "async": {"enabled": False},
            "serverless": {"enabled": False},
            "batch": {"enabled": False},
        },
    )
    pooled = variant(synth, "realtime")

    assert "InstanceType" not in pooled
    assert pooled["InstancePools"] == [
        {"InstanceType": "ml.g6.xlarge", "Priority": 1},
        {"InstanceType": "ml.g5.xlarge", "Priority": 2},
    ]
    assert pooled["VariantInstanceProvisionTimeoutInSeconds"] == 900
    assert pooled["ManagedInstanceScaling"]["MinInstanceCount"] == 0
    assert len(synth.resources("realtime", "AWS::SageMaker::Model")) == 1
    # Copies, not the variant, are autoscaled: the name need not follow the pools.
    _, endpoint = synth.only("realtime", "AWS::SageMaker::Endpoint")
    assert endpoint["Properties"]["EndpointName"] == "Detectron2-Realtime"
    templates = [str(path) for path in synth.outdir.glob("*Realtime.template.json")]
    assert [str(match) for match in lint_by_config(ManualArgs(templates=templates))] == []


# --- Configuration --------------------------------------------------------------------------------


def test_pools_resolve_the_instance_types_and_the_default_timeout(tmp_path):
    config = load(tmp_path, {"async": {"instance_pools": ["ml.g6.xlarge", "ml.m5.xlarge"]}})

    assert config.async_.instance_types == ("ml.g6.xlarge", "ml.m5.xlarge")
    assert config.async_.primary_instance_type == "ml.g6.xlarge"
    assert config.async_.provision_timeout == 900
    assert config.realtime.instance_types == ("ml.g5.xlarge",) and config.realtime.provision_timeout is None


@pytest.mark.parametrize("mode", ["realtime", "async"])
@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"instance_pools": []},
            "instance_pools: must list 1 to 5 instance types (SageMaker's limit per variant), or be "
            "null for instance_type (got 0)",
        ),
        (
            {
                "instance_pools": [
                    "ml.g6.xlarge",
                    "ml.g5.xlarge",
                    "ml.g4dn.xlarge",
                    "ml.g6.2xlarge",
                    "ml.g5.2xlarge",
                    "ml.g4dn.2xlarge",
                ]
            },
            "instance_pools: must list 1 to 5 instance types (SageMaker's limit per variant), or be "
            "null for instance_type (got 6)",
        ),
        (
            {"instance_pools": ["ml.g6.xlarge", "ml.g5.xlarge", "ml.g6.xlarge"]},
            "instance_pools: must list distinct instance types (got ml.g6.xlarge more than once)",
        ),
        (
            {"instance_type": "ml.g5.xlarge", "instance_pools": ["ml.g6.xlarge"]},
            "instance_type: must be unset with instance_pools: a variant has either one instance type "
            "or pools, and the pools' first entry is priority 1 (got 'ml.g5.xlarge')",
        ),
        (
            {"provision_timeout_seconds": 600},
            "provision_timeout_seconds: needs instance_pools: it bounds SageMaker's search for "
            "capacity across the pools; with one instance_type there is nothing to fall back to (got 600)",
        ),
        (
            {"instance_pools": ["ml.g5.xlarge"], "provision_timeout_seconds": 299},
            "provision_timeout_seconds: must be between 300 and 3600 (got 299)",
        ),
        (
            {"instance_pools": ["ml.g5.xlarge", "ml.t2.medium"]},
            "instance_pools: burstable ml.t* instances cannot be autoscaled: choose a non-burstable "
            "type or set scaling to null (got 'ml.t2.medium')",
        ),
    ],
)
def test_refused_pool_lists_name_the_field(tmp_path, mode, section, message):
    problem(tmp_path, {mode: section}, f"{mode}.{message}")


@pytest.mark.parametrize(
    ("instance_type", "reason"),
    [
        ("ml.p3.2xlarge", "must not be ml.p2/ml.p3"),
        ("ml.inf2.xlarge", "Inferentia/Trainium need a Neuron build"),
        ("ml.c7g.xlarge", "must be an x86_64 instance type"),
        ("g5.xlarge", "must look like ml.<family>.<size>"),
    ],
)
def test_each_pool_is_checked_as_instance_type_is(tmp_path, instance_type, reason):
    with pytest.raises(ConfigError, match=r"realtime\.instance_pools\.1: .*" + reason.replace(".", r"\.")):
        load(tmp_path, {"realtime": {"instance_pools": ["ml.g5.xlarge", instance_type]}})


def test_async_concurrency_must_be_set_when_the_pools_load_different_numbers_of_copies(tmp_path):
    pools = ["ml.g5.12xlarge", "ml.g5.xlarge"]
    problem(
        tmp_path,
        {"async": {"instance_pools": pools}},
        "async.max_concurrent_invocations_per_instance: must be set when the instance pools load "
        "different numbers of model copies: the default is 2 per copy (one per GPU) and SageMaker "
        "takes one value for every instance of the endpoint (the default would be "
        "ml.g5.12xlarge: 8, ml.g5.xlarge: 2)",
    )
    config = load(
        tmp_path, {"async": {"instance_pools": pools, "max_concurrent_invocations_per_instance": 4}}
    )
    assert config.async_.concurrent_invocations_per_instance == 4


@pytest.mark.parametrize("field", ["variants", "shadow"])
def test_pools_are_refused_beside_experiments(tmp_path, field):
    section = {
        "instance_pools": ["ml.g6.xlarge", "ml.g5.xlarge"],
        "variants": [{"name": "A", "weight": 1}] if field == "variants" else None,
        "shadow": {"name": "Shadow"} if field == "shadow" else None,
    }
    problem(
        tmp_path,
        {"realtime": section},
        f"realtime.{field}: must be null with instance_pools: an A/B or shadow test compares variants "
        "on known hardware, and pools let SageMaker change a variant's instance type on its own; give "
        "each variant its instance_type instead",
    )


def components(pools, **settings):
    return {"realtime": {"instance_pools": pools, "scaling": None, "inference_components": settings}}


def test_inference_component_pools_are_all_gpu_or_all_cpu(tmp_path):
    problem(
        tmp_path,
        components(["ml.g5.xlarge", "ml.m5.xlarge"]),
        "realtime.instance_pools: must be all GPU or all CPU types with inference_components: the "
        "component has one specification (one image, one accelerator count) for every pool "
        "(got ml.g5.xlarge, ml.m5.xlarge)",
    )


def test_inference_component_copies_must_fit_every_pool(tmp_path):
    problem(
        tmp_path,
        components(["ml.g5.2xlarge", "ml.g5.xlarge"], memory_mb=20_000),
        "realtime.inference_components.memory_mb: must be at most 16384, the memory (MiB) of one "
        "ml.g5.xlarge (got 20000)",
    )
    # A type whose resources this project does not know is named under the field that chose it.
    with pytest.raises(ConfigError, match=r"realtime\.instance_pools: must be an instance type whose vCPUs"):
        load(tmp_path, components(["ml.g5.xlarge", "ml.g6e.xlarge"]))


def test_inference_component_max_copies_fit_on_the_smallest_pool(tmp_path):
    problem(
        tmp_path,
        components(["ml.g5.12xlarge", "ml.g5.xlarge"], max_instance_count=2, scaling={"max_copies": 8}),
        "realtime.inference_components.scaling.max_copies: must be at most 2: 1 copies fit on one "
        "ml.g5.xlarge and max_instance_count is 2 (got 8)",
    )


# --- Updates ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool_lists(tmp_path_factory):
    """Before: g6 -> g5 -> g4dn; after: g6 -> g5 (g4dn dropped); autoscaled and fixed."""

    def synth(pools, label, **extra):
        overrides = {
            "realtime": {"instance_pools": pools, **extra},
            "async": {"enabled": False},
            "serverless": {"enabled": False},
            "batch": {"enabled": False},
        }
        return synthesize_config(tmp_path_factory.mktemp(label) / "cdk.out", overrides)

    return {
        "before": synth(REALTIME_POOLS, "pools-before"),
        "after": synth(REALTIME_POOLS[:2], "pools-after"),
        "reordered": synth([REALTIME_POOLS[1], REALTIME_POOLS[0], REALTIME_POOLS[2]], "pools-reordered"),
        "fixed-before": synth(REALTIME_POOLS, "pools-fixed-before", scaling=None),
        "fixed-after": synth(REALTIME_POOLS[:2], "pools-fixed-after", scaling=None),
    }


def endpoint_of(synth):
    return synth.only("realtime", "AWS::SageMaker::Endpoint")[1]["Properties"]["EndpointName"]


@needs_cdk_cli
def test_cdk_diff_of_a_new_pool_list_replaces_the_autoscaled_endpoint_and_its_scalable_target(pool_lists):
    status, output = cdk_diff(pool_lists["before"], pool_lists["after"], "Detectron2-Realtime")
    changes = [line for line in output.splitlines() if line.startswith("[")]

    assert status == 1, output
    for resource in (
        "AWS::SageMaker::EndpointConfig Realtime/Config",
        "AWS::SageMaker::Endpoint Realtime/Endpoint",
        "AWS::ApplicationAutoScaling::ScalableTarget Realtime/InstanceCount/Target",
    ):
        (line,) = [c for c in changes if resource in c]
        assert line.startswith("[~]") and line.endswith(" replace"), line
    before, after = endpoint_of(pool_lists["before"]), endpoint_of(pool_lists["after"])
    assert before != after and f"[-] {before}" in output and f"[+] {after}" in output


def test_reordering_the_pools_is_a_new_endpoint_too(pool_lists):
    names = {endpoint_of(pool_lists[key]) for key in ("before", "after", "reordered")}

    assert len(names) == 3


def test_a_new_pool_list_without_autoscaling_updates_the_endpoint_in_place(pool_lists):
    assert (
        endpoint_of(pool_lists["fixed-before"])
        == endpoint_of(pool_lists["fixed-after"])
        == ("Detectron2-Realtime")
    )
    assert not pool_lists["fixed-after"].resources("realtime", "AWS::ApplicationAutoScaling::ScalableTarget")


def test_pool_endpoint_names_fit_sagemakers_limit():
    prefix = "A" * 48 + "-Realtime"

    names = {endpoint_name(prefix, instance_pools=pools) for pools in (REALTIME_POOLS, ASYNC_POOLS)}

    assert len(names) == 2 and all(len(name) == MAX_ENDPOINT_NAME_LENGTH for name in names)
