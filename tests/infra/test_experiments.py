"""config/ab-test.json (weighted variants + data capture) and config/shadow-test.json (a shadow
variant + data capture), data capture on async, and cfn-lint / cdk-nag over every new example."""

import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template
from cfnlint.api import ManualArgs, lint_by_config
from syrupy.extensions.json import JSONSnapshotExtension

from sagemaker_constructs.settings import AppConfig, RealtimeConfig
from stacks import build_stacks
from tests.synthesis import REPO_ROOT, acknowledgements, redact_image_hashes

from .cfn import as_list, flatten, logical_id

GPU_AMI = RealtimeConfig().inference_ami_version


@pytest.fixture(scope="module")
def ab(shipped):
    return shipped("ab-test")


@pytest.fixture(scope="module")
def shadow(shipped):
    return shipped("shadow-test")


@pytest.fixture(scope="module")
def scale_to_zero(shipped):
    return shipped("scale-to-zero")


@pytest.mark.parametrize("key", ["shared", "realtime"])
@pytest.mark.parametrize("example", ["ab", "shadow"])
def test_template_snapshot(request, example, key, snapshot):
    synth = request.getfixturevalue(example)

    assert redact_image_hashes(synth, synth.template(key)) == snapshot.use_extension(JSONSnapshotExtension)


def endpoint_config(synth) -> dict:
    _, config = synth.only("realtime", "AWS::SageMaker::EndpointConfig")
    return config["Properties"]


def model_ids_by_variant(synth) -> dict[str, str]:
    return {
        variant["VariantName"]: variant["ModelName"]["Fn::GetAtt"][0]
        for key in ("ProductionVariants", "ShadowProductionVariants")
        for variant in endpoint_config(synth).get(key, [])
    }


# --- A/B ---------------------------------------------------------------------------------------


def test_ab_test_has_two_weighted_production_variants_and_no_shadow(ab):
    config = endpoint_config(ab)

    assert [
        (v["VariantName"], v["InitialVariantWeight"], v["InstanceType"], v["InitialInstanceCount"])
        for v in config["ProductionVariants"]
    ] == [("Champion", 0.9, "ml.g5.xlarge", 1), ("Challenger", 0.1, "ml.g4dn.xlarge", 1)]
    assert "ShadowProductionVariants" not in config
    assert all(v["InferenceAmiVersion"] == GPU_AMI for v in config["ProductionVariants"])


def test_each_variant_deploys_its_own_model(ab):
    models = ab.resources("realtime", "AWS::SageMaker::Model")
    by_variant = model_ids_by_variant(ab)

    assert sorted(by_variant) == ["Challenger", "Champion"]
    assert sorted(by_variant.values()) == sorted(models)
    for model in models.values():
        assert model["Properties"]["PrimaryContainer"]["Environment"] == {"INFERENCE_MODE": "realtime"}


def test_each_variant_scales_on_its_own_invocations(ab):
    name = ab.stacks.modes["realtime"].endpoint.endpoint_name
    targets = ab.resources("realtime", "AWS::ApplicationAutoScaling::ScalableTarget")
    policies = ab.resources("realtime", "AWS::ApplicationAutoScaling::ScalingPolicy")

    bounds = {
        flatten(t["Properties"]["ResourceId"]): (
            t["Properties"]["MinCapacity"],
            t["Properties"]["MaxCapacity"],
        )
        for t in targets.values()
    }
    assert bounds == {
        f"endpoint/{name}/variant/Champion": (1, 4),
        f"endpoint/{name}/variant/Challenger": (1, 2),
    }
    assert all(
        t["DependsOn"] == [logical_id(ab.stacks.modes["realtime"].endpoint.endpoint)]
        for t in targets.values()
    )
    assert {t["Properties"]["ScalableDimension"] for t in targets.values()} == {
        "sagemaker:variant:DesiredInstanceCount"
    }
    assert sorted(p["Properties"]["ScalingTargetId"]["Ref"] for p in policies.values()) == sorted(targets)
    assert {
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]
        for p in policies.values()
    } == {"SageMakerVariantInvocationsPerInstance"}


def test_updates_keep_scaled_instance_counts_but_take_new_weights_and_capture_settings(ab):
    _, endpoint = ab.only("realtime", "AWS::SageMaker::Endpoint")

    assert endpoint["Properties"]["RetainAllVariantProperties"] is True
    assert endpoint["Properties"]["ExcludeRetainedVariantProperties"] == [
        {"VariantPropertyType": "DesiredWeight"},
        {"VariantPropertyType": "DataCaptureConfig"},
    ]


def test_each_production_variant_has_its_own_alarms_and_a_deployment_rolls_back_on_any(ab):
    alarms = ab.resources("realtime", "AWS::CloudWatch::Alarm")
    _, endpoint = ab.only("realtime", "AWS::SageMaker::Endpoint")
    by_variant: dict[str, set[str]] = {}
    for alarm in alarms.values():
        dimensions = {d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}
        by_variant.setdefault(dimensions["VariantName"], set()).add(alarm["Properties"]["MetricName"])

    assert sorted(by_variant) == ["Challenger", "Champion"]
    assert by_variant["Champion"] == by_variant["Challenger"]
    rollback = endpoint["Properties"]["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert len(rollback) == 2 * 3  # 5XX, model errors, p99 latency per variant
    assert {r["AlarmName"]["Ref"] for r in rollback} <= set(alarms)


def test_the_dashboard_has_a_row_per_variant(ab, shadow):
    for synth, variants in ((ab, ["Champion", "Challenger"]), (shadow, ["AllTraffic", "Shadow"])):
        endpoint = synth.stacks.modes["realtime"].endpoint
        (dashboard,) = synth.resources("shared", "AWS::CloudWatch::Dashboard").values()
        body = flatten(dashboard["Properties"]["DashboardBody"])

        assert list(endpoint.variant_metrics) == variants
        for variant in variants:
            assert f"Real-time {variant}" in body


def test_ab_stack_outputs_the_variant_names(ab):
    outputs = ab.template("realtime")["Outputs"]

    assert outputs["VariantNames"]["Value"] == "Champion,Challenger"
    assert "ShadowVariantName" not in outputs and "InferenceComponentName" not in outputs


def app_template(overrides: dict, mode: str) -> tuple:
    """Stacks built from `overrides` (other modes off); the template of `mode`'s stack and the stacks."""
    modes = {"realtime": {"enabled": False}, "async": {"enabled": False}}
    modes.update({"serverless": {"enabled": False}, "batch": {"enabled": False}})
    config = AppConfig.model_validate({**modes, **overrides})
    stacks = build_stacks(cdk.App(), config, container_dir=REPO_ROOT / "container")
    return Template.from_stack(stacks.modes[mode]).to_json(), stacks


def test_a_pinned_variant_deploys_that_version_and_the_other_follows_the_current_one():
    template, stacks = app_template(
        {
            "realtime": {
                "variants": [{"name": "A", "weight": 1, "model_version": 7}, {"name": "B", "weight": 1}]
            }
        },
        "realtime",
    )
    realtime = stacks.modes["realtime"]
    packages = {
        name: flatten(
            template["Resources"][logical_id(realtime.node.find_child(f"{name}Model").resource)][
                "Properties"
            ]["PrimaryContainer"]["ModelPackageName"]
        )
        for name in ("A", "B")
    }

    assert packages["A"] == (
        "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/detectron2-mask-rcnn/7"
    )
    assert packages["B"].startswith("<SsmParameterValue")


def ab_endpoint_name(challenger: dict) -> str:
    _, stacks = app_template(
        {"realtime": {"variants": [{"name": "A", "weight": 1}, {"name": "B", **challenger}]}}, "realtime"
    )
    return stacks.modes["realtime"].endpoint.endpoint_name


def test_a_new_instance_type_of_an_autoscaled_variant_is_a_new_endpoint_a_new_weight_is_not():
    # SageMaker refuses to change the instance type of an autoscaled variant in place.
    base = ab_endpoint_name({"weight": 1, "instance_type": "ml.g5.xlarge"})

    assert base.startswith("Detectron2-Realtime-") and len(base) == len("Detectron2-Realtime-") + 8
    assert ab_endpoint_name({"weight": 3, "instance_type": "ml.g5.xlarge"}) == base
    assert ab_endpoint_name({"weight": 1, "instance_type": "ml.g5.2xlarge"}) != base


# --- shadow ------------------------------------------------------------------------------------


def test_shadow_test_copies_half_the_production_calls_to_a_shadow_variant(shadow):
    config = endpoint_config(shadow)
    (production,) = config["ProductionVariants"]
    (copy,) = config["ShadowProductionVariants"]

    assert (production["VariantName"], production["InitialVariantWeight"]) == ("AllTraffic", 1)
    assert (copy["VariantName"], copy["InitialVariantWeight"], copy["InstanceType"]) == (
        "Shadow",
        0.5,
        "ml.g4dn.xlarge",
    )
    assert production["ModelName"] != copy["ModelName"]


def test_only_the_production_variant_is_autoscaled(shadow):
    (target,) = shadow.resources("realtime", "AWS::ApplicationAutoScaling::ScalableTarget").values()

    assert flatten(target["Properties"]["ResourceId"]).endswith("/variant/AllTraffic")


def test_shadow_stack_outputs_the_shadow_variant_name(shadow):
    outputs = shadow.template("realtime")["Outputs"]

    assert (outputs["VariantNames"]["Value"], outputs["ShadowVariantName"]["Value"]) == (
        "AllTraffic",
        "Shadow",
    )


# --- data capture ------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["ab", "shadow"])
def test_data_capture_samples_input_and_output_into_the_artifacts_bucket_with_its_key(request, example):
    synth = request.getfixturevalue(example)
    store = synth.stacks.shared.store
    capture = endpoint_config(synth)["DataCaptureConfig"]
    stack = synth.stack_name("shared")

    assert capture["EnableCapture"] is True
    assert capture["InitialSamplingPercentage"] == 20
    assert capture["CaptureOptions"] == [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]
    assert capture["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json"]}
    assert flatten(capture["DestinationS3Uri"]).startswith(f"s3://<{stack}:") and flatten(
        capture["DestinationS3Uri"]
    ).endswith("/capture/realtime")
    assert logical_id(store.bucket) in flatten(capture["DestinationS3Uri"])
    assert logical_id(store.key) in flatten(capture["KmsKeyId"])


def role_statements(synth) -> list[dict]:
    role_id = logical_id(synth.stacks.shared.execution_role)
    return [
        statement
        for policy in synth.resources("shared", "AWS::IAM::Policy").values()
        if policy["Properties"]["Roles"] == [{"Ref": role_id}]
        for statement in as_list(policy["Properties"]["PolicyDocument"]["Statement"])
    ]


def test_the_execution_role_writes_and_reads_captures_under_the_capture_prefix_with_the_key(ab):
    store = ab.stacks.shared.store
    bucket = f"<{logical_id(store.bucket)}.Arn>"
    statements = role_statements(ab)

    (write,) = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    assert [flatten(r) for r in as_list(write["Resource"])] == [f"{bucket}/capture/realtime/*"]
    (key,) = [s for s in statements if "kms:GenerateDataKey" in as_list(s["Action"])]
    assert flatten(key["Resource"]) == f"<{logical_id(store.key)}.Arn>"
    reads = [
        flatten(r)
        for s in statements
        if "s3:GetObject" in as_list(s["Action"])
        for r in as_list(s["Resource"])
    ]
    # The model tarball, registered versions' tarballs, and the captures; nothing of async or batch,
    # which are off.
    assert sorted(reads) == sorted(
        [
            "arn:<AWS::Partition>:s3:::replace-with-your-bucket/detectron2/model.tar.gz",
            f"{bucket}/models/*",
            f"{bucket}/capture/realtime/*",
        ]
    )
    (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/*", "capture/realtime/*"]}}


def test_captured_objects_expire_after_the_configured_days(ab):
    store = ab.stacks.shared.store
    bucket = ab.resources("shared", "AWS::S3::Bucket")[logical_id(store.bucket)]

    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    (capture,) = [r for r in rules if r.get("Prefix") == "capture/realtime/"]
    assert capture == {"Prefix": "capture/realtime/", "ExpirationInDays": 30, "Status": "Enabled"}


def test_async_data_capture_goes_under_its_own_prefix():
    template, stacks = app_template(
        {"async": {"data_capture": {"sampling_percentage": 5, "capture": "input", "expiry_days": 7}}}, "async"
    )
    (config,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::EndpointConfig"]
    (endpoint,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Endpoint"]
    shared = Template.from_stack(stacks.shared).to_json()["Resources"]
    rules = shared[logical_id(stacks.shared.store.bucket)]["Properties"]["LifecycleConfiguration"]["Rules"]

    capture = config["Properties"]["DataCaptureConfig"]
    assert (capture["InitialSamplingPercentage"], capture["CaptureOptions"]) == (
        5,
        [{"CaptureMode": "Input"}],
    )
    assert flatten(capture["DestinationS3Uri"]).endswith("/capture/async")
    assert endpoint["Properties"]["ExcludeRetainedVariantProperties"] == [
        {"VariantPropertyType": "DataCaptureConfig"}
    ]
    role = stacks.shared.execution_role
    role_policy = Template.from_stack(stacks.shared).to_json()["Resources"]
    writes = [
        flatten(resource)
        for r in role_policy.values()
        if r["Type"] == "AWS::IAM::Policy" and r["Properties"]["Roles"] == [{"Ref": logical_id(role)}]
        for statement in as_list(r["Properties"]["PolicyDocument"]["Statement"])
        if "s3:PutObject" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    ]
    assert f"<{logical_id(stacks.shared.store.bucket)}.Arn>/capture/async/*" in writes
    assert [r for r in rules if r.get("Prefix") == "capture/async/"] == [
        {"Prefix": "capture/async/", "ExpirationInDays": 7, "Status": "Enabled"}
    ]


# --- lint and nag over every new example -------------------------------------------------------


def test_cfn_lint_finds_nothing_in_the_new_examples(ab, shadow, scale_to_zero):
    templates = sorted(str(p) for s in (ab, shadow, scale_to_zero) for p in s.outdir.glob("*.template.json"))

    assert len(templates) == 6
    assert [str(m) for m in lint_by_config(ManualArgs(templates=templates))] == []


@pytest.mark.parametrize("example", ["ab", "shadow", "scale_to_zero"])
def test_cdk_nag_reports_nothing_unacknowledged(request, example):
    synth = request.getfixturevalue(example)
    report = json.loads((synth.outdir / "validation-report.json").read_text())

    assert all(not plugin.get("violations") for plugin in report["pluginReports"])


def test_the_capture_prefix_wildcard_is_the_only_new_acknowledgement(ab):
    prefix = "/Detectron2AbTest-Shared/ExecutionRole/Role Annotation::AwsSolutions-IAM5[Resource::"
    bucket = "<ArtifactsBucket88671897.Arn>"

    assert sorted(acknowledgements(ab.outdir)) == sorted(
        [
            "/Detectron2AbTest-Shared/Artifacts/AccessLogs Annotation::AwsSolutions-S1",
            f"{prefix}*]",
            f"{prefix}arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/*]",
            f"{prefix}{bucket}/models/*]",
            f"{prefix}{bucket}/capture/realtime/*]",
        ]
    )
