"""Updates that must deploy: an autoscaled variant's new instance type, on before/after templates.

SageMaker refuses UpdateEndpoint when it changes the instance type of a variant registered with
Application Auto Scaling (and when it removes such a variant). So for an autoscaled variant the
instance type is part of the endpoint's name: a new type is a new endpoint, which CloudFormation
creates (with its own scalable target) before it deletes the old endpoint and its target.
"""

import pytest

from sagemaker_constructs.endpoint import MAX_ENDPOINT_NAME_LENGTH, endpoint_name
from tests.synthesis import cdk_diff, needs_cdk_cli, synthesize_config


def endpoint_and_target(synth, key):
    endpoint_id, endpoint = synth.only(key, "AWS::SageMaker::Endpoint")
    targets = synth.resources(key, "AWS::ApplicationAutoScaling::ScalableTarget")
    target = next(iter(targets.values()))["Properties"] if targets else None
    return endpoint_id, endpoint["Properties"], target


@pytest.fixture(scope="module")
def instance_types(tmp_path_factory):
    """Before: both instance modes on ml.g5.xlarge; after: ml.g6.2xlarge; autoscaled (the defaults)."""

    def synth(instance_type, **extra):
        overrides = {
            "realtime": {"instance_type": instance_type, **extra},
            "async": {"instance_type": instance_type, **extra},
            "serverless": {"enabled": False},
            "batch": {"enabled": False},
        }
        label = instance_type.replace(".", "-") + ("-fixed" if extra else "")
        return synthesize_config(tmp_path_factory.mktemp(label) / "cdk.out", overrides)

    return {
        "before": synth("ml.g5.xlarge"),
        "after": synth("ml.g6.2xlarge"),
        "fixed-before": synth("ml.g5.xlarge", scaling=None),
        "fixed-after": synth("ml.g6.2xlarge", scaling=None),
    }


@pytest.mark.parametrize(("key", "stack"), [("realtime", "Realtime"), ("async", "Async")])
def test_a_new_instance_type_of_an_autoscaled_variant_is_a_new_endpoint(instance_types, key, stack):
    before_id, before, before_target = endpoint_and_target(instance_types["before"], key)
    after_id, after, after_target = endpoint_and_target(instance_types["after"], key)

    # Same resource, new EndpointName: CloudFormation replaces it (create new, then delete old).
    assert before_id == after_id
    assert (before["EndpointName"], after["EndpointName"]) == (
        f"Detectron2-{stack}-g5-xlarge",
        f"Detectron2-{stack}-g6-2xlarge",
    )
    # The scalable target follows the new endpoint: its ResourceId changes, so it is replaced too and
    # the old registration goes with the old endpoint; no UpdateEndpoint ever changes an autoscaled type.
    assert before_target["ResourceId"] == f"endpoint/{before['EndpointName']}/variant/AllTraffic"
    assert after_target["ResourceId"] == f"endpoint/{after['EndpointName']}/variant/AllTraffic"
    assert after["RetainAllVariantProperties"] is True
    # The stack output clients read carries the new name.
    assert instance_types["after"].template(key)["Outputs"]["EndpointName"]["Value"] == after["EndpointName"]


@needs_cdk_cli
def test_cdk_diff_of_a_new_autoscaled_instance_type_replaces_the_endpoint_and_its_scalable_target(
    instance_types,
):
    status, output = cdk_diff(instance_types["before"], instance_types["after"], "Detectron2-Realtime")
    changes = [line for line in output.splitlines() if line.startswith("[")]

    assert status == 1, output
    for resource in (
        "AWS::SageMaker::EndpointConfig Realtime/Config",
        "AWS::SageMaker::Endpoint Realtime/Endpoint",
        "AWS::ApplicationAutoScaling::ScalableTarget Realtime/InstanceCount/Target",
    ):
        (line,) = [c for c in changes if resource in c]
        assert line.startswith("[~]") and line.endswith(" replace"), line
    assert "[-] Detectron2-Realtime-g5-xlarge" in output and "[+] Detectron2-Realtime-g6-2xlarge" in output
    # The alarms follow the new name in place.
    alarms = [c for c in changes if "AWS::CloudWatch::Alarm" in c]
    assert alarms and not any(c.endswith(" replace") for c in alarms)


@pytest.mark.parametrize("key", ["realtime", "async"])
def test_a_new_instance_type_without_autoscaling_updates_the_endpoint_in_place(instance_types, key):
    _, before, before_target = endpoint_and_target(instance_types["fixed-before"], key)
    _, after, after_target = endpoint_and_target(instance_types["fixed-after"], key)

    # Same name: an UpdateEndpoint (a blue/green deployment) moves it to the new instance type.
    assert before["EndpointName"] == after["EndpointName"] == endpoint_name(f"Detectron2-{key.title()}")
    assert before_target is None and after_target is None
    assert before["EndpointConfigName"] == after["EndpointConfigName"]  # the GetAtt of a replaced config


def test_endpoint_names_fit_sagemakers_limit():
    prefix = "A" * 48 + "-Realtime"

    long_name = endpoint_name(prefix, "ml.p4de.24xlarge")
    other = endpoint_name(prefix, "ml.p5en.48xlarge")

    assert len(long_name) == MAX_ENDPOINT_NAME_LENGTH and len(other) == MAX_ENDPOINT_NAME_LENGTH
    assert long_name != other
    assert endpoint_name("Detectron2-Async", "ml.g4dn.xlarge") == "Detectron2-Async-g4dn-xlarge"
