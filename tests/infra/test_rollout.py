"""Blue/green rollouts: the config rules SageMaker imposes, and the DeploymentConfig they produce."""

import pytest

from tests.synthesis import synthesize_config

from .config_helpers import load, problem

CANARY_ONE = {"traffic_routing": "CANARY", "canary_size": {"type": "INSTANCE_COUNT", "value": 1}}
TWO_TO_SIX = {"initial_instance_count": 2, "scaling": {"min_capacity": 2, "max_capacity": 6}}


# --- config ----------------------------------------------------------------------------------


def test_every_endpoint_mode_rolls_out_all_at_once_with_a_baking_period_and_rollback_by_default(tmp_path):
    config = load(tmp_path)

    for mode in (config.realtime, config.async_, config.serverless):
        assert mode.rollout.traffic_routing == "ALL_AT_ONCE"
        assert (mode.rollout.wait_interval_seconds, mode.rollout.termination_wait_seconds) == (300, 0)
        assert mode.rollout.auto_rollback and mode.rollout.maximum_execution_timeout_seconds is None


def test_a_canary_needs_its_size(tmp_path):
    problem(
        tmp_path,
        {"realtime": {**TWO_TO_SIX, "rollout": {"traffic_routing": "CANARY"}}},
        "realtime.rollout.canary_size: is required with traffic_routing CANARY",
    )


def test_a_step_size_of_the_other_routing_is_refused(tmp_path):
    problem(
        tmp_path,
        {
            "realtime": {
                **TWO_TO_SIX,
                "rollout": {**CANARY_ONE, "linear_step_size": {"type": "CAPACITY_PERCENT", "value": 20}},
            }
        },
        "realtime.rollout.linear_step_size: applies to traffic_routing LINEAR only (got CANARY)",
    )


def test_a_canary_is_at_most_half_the_fleet_in_percent(tmp_path):
    problem(
        tmp_path,
        {
            "realtime": {
                **TWO_TO_SIX,
                "rollout": {
                    "traffic_routing": "CANARY",
                    "canary_size": {"type": "CAPACITY_PERCENT", "value": 60},
                },
            }
        },
        "realtime.rollout.canary_size.value: must be at most 50 percent (got 60)",
    )


@pytest.mark.parametrize("percent", [5, 60])
def test_a_linear_step_is_10_to_50_percent(tmp_path, percent):
    problem(
        tmp_path,
        {
            "realtime": {
                **TWO_TO_SIX,
                "rollout": {
                    "traffic_routing": "LINEAR",
                    "linear_step_size": {"type": "CAPACITY_PERCENT", "value": percent},
                },
            }
        },
        f"realtime.rollout.linear_step_size.value: must be 10-50 percent (got {percent})",
    )


def test_a_canary_needs_two_instances_at_all_times(tmp_path):
    # The default real-time scaling may run one instance.
    problem(
        tmp_path,
        {"realtime": {"rollout": CANARY_ONE}},
        "realtime.rollout.traffic_routing: CANARY shifts traffic in parts of the fleet and needs at least "
        "2 instances at all times; this variant may run 1 (scaling.min_capacity): use ALL_AT_ONCE or "
        "raise scaling.min_capacity (got 'CANARY')",
    )


def test_an_async_endpoint_that_scales_to_zero_rolls_out_all_at_once(tmp_path):
    problem(
        tmp_path,
        {"async": {"rollout": CANARY_ONE}},
        "async.rollout.traffic_routing: CANARY shifts traffic in parts of the fleet and needs at least "
        "2 instances at all times; this variant may run 0 (scaling.min_capacity): use ALL_AT_ONCE or "
        "raise scaling.min_capacity (got 'CANARY')",
    )


def test_without_scaling_the_initial_count_is_the_fleet(tmp_path):
    problem(
        tmp_path,
        {
            "realtime": {
                "scaling": None,
                "initial_instance_count": 3,
                "rollout": {
                    "traffic_routing": "CANARY",
                    "canary_size": {"type": "INSTANCE_COUNT", "value": 2},
                },
            }
        },
        "realtime.rollout.canary_size.value: must be at most half the fewest instances the variant runs "
        "(3, initial_instance_count): at most 1 (got 2)",
    )


def test_linear_instance_steps_are_10_to_50_percent_of_the_fleet(tmp_path):
    problem(
        tmp_path,
        {
            "realtime": {
                "initial_instance_count": 4,
                "scaling": {"min_capacity": 4, "max_capacity": 20},
                "rollout": {
                    "traffic_routing": "LINEAR",
                    "linear_step_size": {"type": "INSTANCE_COUNT", "value": 1},
                },
            }
        },
        "realtime.rollout.linear_step_size.value: must be 10-50% of the variant's instances (4-20, "
        "scaling.min_capacity): between 2 and 2 (got 1)",
    )


def test_the_execution_timeout_must_outlast_the_waits(tmp_path):
    problem(
        tmp_path,
        {
            "realtime": {
                **TWO_TO_SIX,
                "rollout": {
                    **CANARY_ONE,
                    "wait_interval_seconds": 600,
                    "termination_wait_seconds": 300,
                    "maximum_execution_timeout_seconds": 1500,
                },
            }
        },
        "realtime.rollout.maximum_execution_timeout_seconds: must be more than the deployment's waiting "
        "time, 2 traffic step(s) x wait_interval_seconds (600) + termination_wait_seconds (300) = 1500 "
        "(got 1500)",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("wait_interval_seconds", 3601, "must be between 0 and 3600 (got 3601)"),
        ("termination_wait_seconds", -1, "must be between 0 and 3600 (got -1)"),
        ("maximum_execution_timeout_seconds", 599, "must be between 600 and 28800 (got 599)"),
        ("maximum_execution_timeout_seconds", 28801, "must be between 600 and 28800 (got 28801)"),
    ],
)
def test_rollout_times_are_within_sagemakers_ranges(tmp_path, field, value, message):
    problem(tmp_path, {"async": {"rollout": {field: value}}}, f"async.rollout.{field}: {message}")


def test_serverless_rolls_out_all_at_once_only(tmp_path):
    problem(
        tmp_path,
        {
            "serverless": {
                "rollout": {
                    "traffic_routing": "LINEAR",
                    "linear_step_size": {"type": "CAPACITY_PERCENT", "value": 20},
                }
            }
        },
        "serverless.rollout.traffic_routing: must be ALL_AT_ONCE for a serverless endpoint: it has no "
        "instances to shift in parts (got 'LINEAR')",
    )


def test_auto_rollback_needs_the_alarms_of_monitoring(tmp_path):
    with pytest.raises(Exception) as raised:
        load(tmp_path, {"monitoring": {"enabled": False}, "async": {"enabled": False}})

    assert str(raised.value).splitlines()[1:] == [
        f"  - {mode}.rollout.auto_rollback: needs monitoring.enabled: it rolls back on the alarms "
        "monitoring creates; set it to false or enable monitoring (got true)"
        for mode in ("realtime", "serverless")
    ]


def test_monitoring_can_be_off_when_nothing_rolls_back_on_it(tmp_path):
    off = {"rollout": {"auto_rollback": False}}

    config = load(
        tmp_path, {"monitoring": {"enabled": False}, "realtime": off, "async": off, "serverless": off}
    )

    assert not config.monitoring.enabled


# --- templates -------------------------------------------------------------------------------


def endpoint_of(synth, key):
    return synth.only(key, "AWS::SageMaker::Endpoint")[1]["Properties"]


def rollback_alarm_ids(synth, key) -> list[str]:
    deployment = endpoint_of(synth, key)["DeploymentConfig"]
    return [alarm["AlarmName"]["Ref"] for alarm in deployment["AutoRollbackConfiguration"]["Alarms"]]


def test_prod_realtime_rolls_out_a_canary_and_rolls_back_on_alarms_of_its_own_stack(prod_synth):
    endpoint = endpoint_of(prod_synth, "realtime")
    alarms = prod_synth.resources("realtime", "AWS::CloudWatch::Alarm")

    assert endpoint["DeploymentConfig"]["BlueGreenUpdatePolicy"] == {
        "TrafficRoutingConfiguration": {
            "Type": "CANARY",
            "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1},
            "WaitIntervalInSeconds": 600,
        },
        "TerminationWaitInSeconds": 300,
        "MaximumExecutionTimeoutInSeconds": 3600,
    }
    rollback = rollback_alarm_ids(prod_synth, "realtime")
    assert {alarms[i]["Properties"]["MetricName"] for i in rollback} == {
        "Invocation5XXErrors",
        "InvocationModelErrors",
        "ModelLatency",
    }
    # An update keeps the autoscaled instance count (the canary is a part of that fleet).
    assert endpoint["RetainAllVariantProperties"] is True


@pytest.mark.parametrize("key", ["realtime", "async", "serverless"])
def test_every_endpoint_rolls_back_on_its_error_and_latency_alarms_by_default(synth, key):
    endpoint = endpoint_of(synth, key)
    alarms = synth.resources(key, "AWS::CloudWatch::Alarm")
    rollback = rollback_alarm_ids(synth, key)

    assert endpoint["DeploymentConfig"]["BlueGreenUpdatePolicy"] == {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300},
        "TerminationWaitInSeconds": 0,
    }
    errors = "InvocationFailures" if key == "async" else "InvocationModelErrors"
    assert sorted(alarms[i]["Properties"]["MetricName"] for i in rollback) == sorted(
        ["Invocation5XXErrors", errors, "ModelLatency"]
    )
    # The alarms watch the endpoint by its name, not through a reference to it (no cycle).
    for alarm_id in rollback:
        dimensions = {d["Name"]: d["Value"] for d in alarms[alarm_id]["Properties"]["Dimensions"]}
        assert dimensions == {"EndpointName": endpoint["EndpointName"], "VariantName": "AllTraffic"}


@pytest.fixture(scope="module")
def unmonitored(tmp_path_factory):
    off = {"rollout": {"auto_rollback": False, "wait_interval_seconds": 0}}
    return synthesize_config(
        tmp_path_factory.mktemp("unmonitored") / "cdk.out",
        {"monitoring": {"enabled": False}, "realtime": off, "async": off, "serverless": off},
    )


def test_without_monitoring_there_is_no_rollback_alarm_topic_or_dashboard(unmonitored):
    endpoint = endpoint_of(unmonitored, "realtime")

    assert "AutoRollbackConfiguration" not in endpoint["DeploymentConfig"]
    assert endpoint["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "ALL_AT_ONCE",
        "WaitIntervalInSeconds": 0,
    }
    assert not unmonitored.resources("serverless", "AWS::CloudWatch::Alarm")
    assert not unmonitored.resources("shared", "AWS::CloudWatch::Dashboard")
    assert not unmonitored.resources("shared", "AWS::SNS::Topic")
    # Only the scale-out-of-zero alarm is left: it drives scaling, it is no monitoring.
    (alarm,) = unmonitored.resources("async", "AWS::CloudWatch::Alarm").values()
    assert alarm["Properties"]["MetricName"] == "HasBacklogWithoutCapacity"
