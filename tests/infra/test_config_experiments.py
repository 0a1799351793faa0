"""Configuration of inference components, A/B variants, shadow variants and data capture: what is
accepted, and the message for each combination SageMaker refuses."""

import pytest

from sagemaker_constructs.settings import ConfigError

from .config_helpers import load, problem

NO_INSTANCE_SCALING = {"scaling": None}


def components(**fields) -> dict:
    return {"realtime": {**NO_INSTANCE_SCALING, "inference_components": fields}}


def test_inference_components_are_off_by_default_and_fit_a_g5_xlarge_when_on(tmp_path):
    assert load(tmp_path).realtime.inference_components is None

    config = load(tmp_path, components()).realtime.inference_components

    assert config is not None and config.scaling is not None
    assert (config.accelerators, config.cpu_cores, config.memory_mb) == (1, 2.0, 8192)
    assert (config.max_instance_count, config.scaling.min_copies, config.scaling.max_copies) == (2, 0, 2)
    assert config.scaling.metric == "invocations_per_copy" and config.scaling.target == 100
    assert config.copies_per_instance("ml.g5.xlarge") == 1
    assert config.copies_per_instance("ml.g5.12xlarge") == 4


def test_inference_components_refuse_instance_count_autoscaling(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"inference_components": {}}},
        "realtime.scaling: must be null with inference_components: instances follow the copies through "
        "managed instance scaling (inference_components.max_instance_count), and copies scale with "
        "inference_components.scaling; SageMaker does not autoscale the instance count of a variant that "
        "hosts inference components",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("shadow", {"sampling_percentage": 10}), ("variants", [{"name": "A", "weight": 1}])],
)
def test_inference_components_refuse_shadow_and_weighted_variants(tmp_path, field, value):
    overrides = components()
    overrides["realtime"][field] = value

    problem(
        tmp_path,
        overrides,
        f"realtime.{field}: must be null with inference_components: this project runs one model as one "
        "component on a single variant; SageMaker's shadow tests and weighted variants route between "
        "model-based variants",
    )


def test_inference_components_refuse_data_capture(tmp_path):
    overrides = components()
    overrides["realtime"]["data_capture"] = {}

    problem(
        tmp_path,
        overrides,
        "realtime.data_capture: must be null with inference_components: this project captures data on "
        "model-based variants only (the classic real-time variant and async)",
    )


@pytest.mark.parametrize(
    ("instance_type", "fields", "message"),
    [
        (
            "ml.g5.xlarge",
            {"accelerators": 2},
            "realtime.inference_components.accelerators: must be at most "
            "1, the GPUs of one ml.g5.xlarge (got 2)",
        ),
        (
            "ml.g5.12xlarge",
            {"accelerators": 8},
            "realtime.inference_components.accelerators: must be at most 4, the GPUs of one ml.g5.12xlarge "
            "(got 8)",
        ),
        (
            "ml.g5.xlarge",
            {"accelerators": 0},
            "realtime.inference_components.accelerators: must be at least 1 on ml.g5.xlarge: the GPU image "
            "serves from a GPU (got 0)",
        ),
        (
            "ml.m5.xlarge",
            {"accelerators": 1},
            "realtime.inference_components.accelerators: must be at most "
            "0, the GPUs of one ml.m5.xlarge (got 1)",
        ),
        (
            "ml.g5.xlarge",
            {"cpu_cores": 8},
            "realtime.inference_components.cpu_cores: must be at most 4, the vCPUs of one ml.g5.xlarge "
            "(got 8.0)",
        ),
        (
            "ml.g4dn.xlarge",
            {"memory_mb": 20000},
            "realtime.inference_components.memory_mb: must be at most 16384, the memory (MiB) of one "
            "ml.g4dn.xlarge (got 20000)",
        ),
    ],
)
def test_a_copy_must_fit_one_instance(tmp_path, instance_type, fields, message):
    overrides = components(**fields)
    overrides["realtime"]["instance_type"] = instance_type

    problem(tmp_path, overrides, message)


def test_max_copies_must_fit_on_max_instances(tmp_path):
    problem(
        tmp_path,
        components(max_instance_count=1, scaling={"max_copies": 3}),
        "realtime.inference_components.scaling.max_copies: must be at most 1: 1 copies fit on one "
        "ml.g5.xlarge and max_instance_count is 1 (got 3)",
    )


def test_min_copies_must_not_exceed_max_copies(tmp_path):
    problem(
        tmp_path,
        components(scaling={"min_copies": 3, "max_copies": 2}),
        "realtime.inference_components.scaling.max_copies: must be at least min_copies (3) (got 2)",
    )


def test_inference_components_need_an_instance_type_with_known_resources(tmp_path):
    overrides = components()
    overrides["realtime"]["instance_type"] = "ml.r5.large"

    with pytest.raises(ConfigError) as error:
        load(tmp_path, overrides)

    (message,) = error.value.problems
    assert message.startswith(
        "realtime.instance_type: must be an instance type whose vCPUs, memory and GPUs this project "
        "knows when inference_components is set: one of ml.g4dn.xlarge, "
    )
    assert message.endswith("(got 'ml.r5.large')")


def test_every_component_problem_is_reported_at_once(tmp_path):
    overrides = components(accelerators=2, cpu_cores=64, memory_mb=999_999)
    overrides["realtime"]["scaling"] = {"min_capacity": 1}
    overrides["realtime"]["shadow"] = {}

    with pytest.raises(ConfigError) as error:
        load(tmp_path, overrides)

    assert [p.split(":")[0] for p in error.value.problems] == [
        "realtime.scaling",
        "realtime.shadow",
        "realtime.inference_components.accelerators",
        "realtime.inference_components.cpu_cores",
        "realtime.inference_components.memory_mb",
    ]


# --- A/B variants and the shadow ---------------------------------------------------------------


def test_variants_take_unset_fields_from_the_section(tmp_path):
    config = load(
        tmp_path,
        {
            "realtime": {
                "instance_type": "ml.g5.2xlarge",
                "model_version": 4,
                "variants": [
                    {"name": "A", "weight": 3},
                    {"name": "B", "weight": 1, "model_version": 5, "instance_type": "ml.g4dn.xlarge"},
                    {"name": "C", "weight": 0, "scaling": None, "initial_instance_count": 2},
                ],
            }
        },
    ).realtime

    plans = {plan.name: plan for plan in config.production_variants()}
    assert [p.weight for p in plans.values()] == [3, 1, 0]
    assert (plans["A"].model_version.number, plans["A"].instance_type) == (4, "ml.g5.2xlarge")
    assert (plans["B"].model_version.number, plans["B"].instance_type) == (5, "ml.g4dn.xlarge")
    assert plans["A"].scaling == plans["B"].scaling == config.scaling
    assert (plans["C"].scaling, plans["C"].initial_instance_count) == (None, 2)


def test_without_variants_there_is_one_all_traffic_variant(tmp_path):
    (plan,) = load(tmp_path).realtime.production_variants()

    assert (plan.name, plan.weight, plan.model_version.is_current) == ("AllTraffic", 1.0, True)


def test_weights_must_give_a_positive_total(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"variants": [{"name": "A", "weight": 0}, {"name": "B", "weight": 0}]}},
        "realtime.variants: weights must give a positive total: SageMaker routes each call by weight / "
        "total (got A=0, B=0)",
    )


def test_a_negative_weight_is_refused(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"variants": [{"name": "A", "weight": -1}]}},
        "realtime.variants.0.weight: must be between 0 and 1000 (got -1.0)",
    )


def test_variant_names_are_unique(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"variants": [{"name": "A", "weight": 1}, {"name": "A", "weight": 1}]}},
        "realtime.variants: names must be unique (got A more than once)",
    )


def test_variants_list_between_one_and_ten(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"variants": []}},
        "realtime.variants: must list 1 to 10 variants (SageMaker's limit per endpoint), or be null for one "
        "variant (got 0)",
    )
    problem(
        tmp_path,
        {"realtime": {"variants": [{"name": f"V{i}", "weight": 1} for i in range(11)]}},
        "realtime.variants: must list 1 to 10 variants (SageMaker's limit per endpoint), or be null for one "
        "variant (got 11)",
    )


def test_a_variant_name_follows_sagemakers_pattern(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"variants": [{"name": "a_b", "weight": 1}]}},
        "realtime.variants.0.name: must be 1-63 letters, digits or inner hyphens (got 'a_b')",
    )


def test_a_shadow_is_refused_beside_more_than_one_production_variant(tmp_path):
    problem(
        tmp_path,
        {
            "realtime": {
                "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}],
                "shadow": {"sampling_percentage": 10},
            }
        },
        "realtime.shadow: SageMaker allows a shadow variant only beside exactly one production variant: "
        "remove shadow or keep one entry in variants (got 2 variants)",
    )


def test_the_shadow_name_differs_from_the_production_variant(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"shadow": {"name": "AllTraffic"}}},
        "realtime.shadow.name: must differ from the production variant names ['AllTraffic'] "
        "(got 'AllTraffic')",
    )


def test_shadow_weight_is_the_sampled_share_of_the_production_weight(tmp_path):
    config = load(
        tmp_path,
        {"realtime": {"variants": [{"name": "Prod", "weight": 2}], "shadow": {"sampling_percentage": 25}}},
    ).realtime

    shadow = config.shadow_variant()
    assert shadow is not None
    assert (shadow.name, shadow.weight, shadow.scaling) == ("Shadow", 0.5, None)


@pytest.mark.parametrize("percentage", [0, 101])
def test_shadow_sampling_is_a_percentage(tmp_path, percentage):
    problem(
        tmp_path,
        {"realtime": {"shadow": {"sampling_percentage": percentage}}},
        f"realtime.shadow.sampling_percentage: must be between 1 and 100 (got {percentage})",
    )


def test_a_burstable_variant_cannot_be_autoscaled(tmp_path):
    problem(
        tmp_path,
        {"realtime": {"variants": [{"name": "A", "weight": 1, "instance_type": "ml.t2.medium"}]}},
        "realtime.variants.0.instance_type: burstable ml.t* instances cannot be autoscaled: choose a "
        "non-burstable type or set this variant's scaling to null (got 'ml.t2.medium')",
    )


def test_variant_and_shadow_pins_must_be_versions_of_this_group(tmp_path):
    other = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/someone-else/3"

    with pytest.raises(ConfigError) as error:
        load(
            tmp_path,
            {
                "realtime": {
                    "variants": [{"name": "A", "weight": 1, "model_version": other}],
                    "shadow": {"model_version": other},
                }
            },
        )

    assert [p.split(":")[0] for p in error.value.problems] == [
        "realtime.variants.0.model_version",
        "realtime.shadow.model_version",
    ]
    assert all("must be a model package version of this app's group" in p for p in error.value.problems)


# --- data capture ------------------------------------------------------------------------------


def test_data_capture_defaults(tmp_path):
    capture = load(tmp_path, {"realtime": {"data_capture": {}}}).realtime.data_capture

    assert capture is not None
    assert (capture.sampling_percentage, capture.capture_modes, capture.expiry_days) == (
        10,
        ["Input", "Output"],
        30,
    )


def test_serverless_has_no_data_capture(tmp_path):
    problem(
        tmp_path,
        {"serverless": {"data_capture": {"sampling_percentage": 5}}},
        "serverless.data_capture: SageMaker does not capture data on serverless endpoints: use an "
        "instance-based real-time or async endpoint (realtime.data_capture, async.data_capture) "
        "(got {'sampling_percentage': 5})",
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sampling_percentage": 0}, "sampling_percentage: must be between 1 and 100 (got 0)"),
        ({"expiry_days": 0}, "expiry_days: must be between 1 and 3650 (got 0)"),
        ({"capture": "headers"}, "capture: Input should be 'input', 'output' or 'input_and_output'"),
    ],
)
def test_data_capture_fields_are_bounded(tmp_path, fields, message):
    with pytest.raises(
        ConfigError, match="async.data_capture." + message.replace("(", r"\(").replace(")", r"\)")
    ):
        load(tmp_path, {"async": {"data_capture": fields}})


def test_inference_components_refuse_stepped_rollouts(tmp_path):
    overrides = components()
    overrides["realtime"]["rollout"] = {
        "traffic_routing": "CANARY",
        "canary_size": {"type": "INSTANCE_COUNT", "value": 1},
    }

    problem(
        tmp_path,
        overrides,
        "realtime.rollout.traffic_routing: must be ALL_AT_ONCE with inference_components: the endpoint may "
        "run 0 instances and a new model version updates the component, not the endpoint (got 'CANARY')",
    )


def test_a_stepped_rollout_of_an_ab_test_counts_its_smallest_variant(tmp_path):
    problem(
        tmp_path,
        {
            "realtime": {
                "rollout": {
                    "traffic_routing": "LINEAR",
                    "linear_step_size": {"type": "CAPACITY_PERCENT", "value": 50},
                },
                "variants": [
                    {"name": "A", "weight": 1, "scaling": {"min_capacity": 2, "max_capacity": 4}},
                    {"name": "B", "weight": 1, "scaling": {"min_capacity": 1, "max_capacity": 2}},
                ],
            }
        },
        "realtime.rollout.traffic_routing: LINEAR shifts traffic in parts of the fleet and needs at least 2 "
        "instances at all times; this variant may run 1 (the smallest variant's scaling.min_capacity or "
        "initial_instance_count): use ALL_AT_ONCE or raise the smallest variant's scaling.min_capacity or "
        "initial_instance_count (got 'LINEAR')",
    )
