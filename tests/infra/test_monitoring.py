"""Alarms per endpoint, the encrypted topic they notify, and the one dashboard of the app."""

import json

import pytest

from .cfn import flatten, logical_id, statements
from .config_helpers import load, problem

# --- config ----------------------------------------------------------------------------------


def test_monitoring_is_on_with_no_subscription_by_default(tmp_path):
    monitoring = load(tmp_path).monitoring

    assert monitoring.enabled and monitoring.email is None
    assert (monitoring.alarms.invocation_5xx_errors, monitoring.alarms.model_errors) == (5, 5)
    assert monitoring.alarms.model_latency_p99_ms.realtime == 3000


def test_the_email_must_be_an_address(tmp_path):
    problem(
        tmp_path,
        {"monitoring": {"email": "oncall"}},
        "monitoring.email: must be an e-mail address such as ops@example.com (got 'oncall')",
    )


def test_an_alarm_cannot_need_more_datapoints_than_it_evaluates(tmp_path):
    problem(
        tmp_path,
        {"monitoring": {"alarms": {"evaluation_minutes": 2, "datapoints_to_alarm": 3}}},
        "monitoring.alarms.datapoints_to_alarm: must be at most evaluation_minutes (2) (got 3)",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory_utilization_percent", 101, "must be between 1 and 100 (got 101)"),
        ("async_oldest_request_age_seconds", 10, "must be between 60 and 86400 (got 10)"),
        ("invocation_5xx_errors", 0, "must be between 1 and 100000 (got 0)"),
    ],
)
def test_alarm_thresholds_ranges(tmp_path, field, value, message):
    problem(tmp_path, {"monitoring": {"alarms": {field: value}}}, f"monitoring.alarms.{field}: {message}")


def test_latency_thresholds_are_per_mode(tmp_path):
    config = load(tmp_path, {"monitoring": {"alarms": {"model_latency_p99_ms": {"async": 60000}}}})

    assert config.monitoring.alarms.model_latency_p99_ms.async_ == 60000
    problem(
        tmp_path,
        {"monitoring": {"alarms": {"model_latency_p99_ms": {"batch": 1}}}},
        "monitoring.alarms.model_latency_p99_ms.batch: unknown field; allowed: realtime, async, serverless",
    )


# --- templates -------------------------------------------------------------------------------


def alarms_by_name(synth, key) -> dict[str, dict]:
    """The endpoint's monitoring alarms (EndpointAlarms.alarms) as synthesized, by name."""
    resources = synth.resources(key, "AWS::CloudWatch::Alarm")
    named = synth.stacks.modes[key].endpoint.alarms.alarms
    return {name: resources[logical_id(alarm)]["Properties"] for name, alarm in named.items()}


def alarm_shape(properties: dict) -> tuple:
    return (
        properties["Namespace"],
        properties["MetricName"],
        properties.get("Statistic") or properties.get("ExtendedStatistic"),
        properties["Threshold"],
    )


EXPECTED = {
    "realtime": {
        "Invocation5XXErrors": ("AWS/SageMaker", "Invocation5XXErrors", "Sum", 5),
        "Invocation4XXErrors": ("AWS/SageMaker", "Invocation4XXErrors", "Sum", 50),
        "ModelErrors": ("AWS/SageMaker", "InvocationModelErrors", "Sum", 5),
        "ModelLatencyP99": ("AWS/SageMaker", "ModelLatency", "p99", 3_000_000),
        "MemoryUtilization": ("/aws/sagemaker/Endpoints", "MemoryUtilization", "Average", 90),
    },
    "async": {
        "Invocation5XXErrors": ("AWS/SageMaker", "Invocation5XXErrors", "Sum", 5),
        "Invocation4XXErrors": ("AWS/SageMaker", "Invocation4XXErrors", "Sum", 50),
        "ModelErrors": ("AWS/SageMaker", "InvocationFailures", "Sum", 5),
        "ModelLatencyP99": ("AWS/SageMaker", "ModelLatency", "p99", 30_000_000),
        "MemoryUtilization": ("/aws/sagemaker/Endpoints", "MemoryUtilization", "Average", 90),
        "Backlog": ("AWS/SageMaker", "ApproximateBacklogSize", "Maximum", 100),
        "OldestRequestAge": ("AWS/SageMaker", "ApproximateAgeOfOldestRequest", "Maximum", 1800),
    },
    "serverless": {
        "Invocation5XXErrors": ("AWS/SageMaker", "Invocation5XXErrors", "Sum", 5),
        "Invocation4XXErrors": ("AWS/SageMaker", "Invocation4XXErrors", "Sum", 50),
        "ModelErrors": ("AWS/SageMaker", "InvocationModelErrors", "Sum", 5),
        "ModelLatencyP99": ("AWS/SageMaker", "ModelLatency", "p99", 20_000_000),
    },
}


@pytest.mark.parametrize("key", ["realtime", "async", "serverless"])
def test_each_endpoint_has_its_alarms_with_the_configured_thresholds(synth, key):
    alarms = alarms_by_name(synth, key)

    assert {name: alarm_shape(p) for name, p in alarms.items()} == EXPECTED[key]
    for properties in alarms.values():
        assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert (properties["EvaluationPeriods"], properties["DatapointsToAlarm"], properties["Period"]) == (
            3,
            2,
            60,
        )
        assert properties["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("key", ["realtime", "async", "serverless"])
def test_every_alarm_notifies_the_shared_alarm_topic(synth, key):
    topic_id = logical_id(synth.stacks.shared.alarm_topic.topic)
    alarms = [
        p
        for p in synth.resources(key, "AWS::CloudWatch::Alarm").values()
        if p["Properties"]["MetricName"] != "HasBacklogWithoutCapacity"
    ]

    assert alarms
    for alarm in alarms:
        (action,) = alarm["Properties"]["AlarmActions"]
        assert flatten(action).startswith("<Detectron2-Shared:PublishOutputRef" + topic_id)


def test_async_queue_alarms_use_the_endpoint_name_dimension_only(synth):
    alarms = alarms_by_name(synth, "async")
    endpoint = synth.only("async", "AWS::SageMaker::Endpoint")[1]["Properties"]["EndpointName"]

    for name in ("Backlog", "OldestRequestAge"):
        assert alarms[name]["Dimensions"] == [{"Name": "EndpointName", "Value": endpoint}]


def test_alarm_topic_is_encrypted_with_the_shared_key_tls_only_and_usable_by_cloudwatch(synth):
    shared = synth.stacks.shared
    topic_id, key_id = logical_id(shared.alarm_topic.topic), logical_id(shared.store.key)
    topic = synth.resources("shared", "AWS::SNS::Topic")[topic_id]["Properties"]
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in synth.resources("shared", "AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [{"Ref": topic_id}]
    ]
    key_policy = synth.resources("shared", "AWS::KMS::Key")[key_id]["Properties"]["KeyPolicy"]

    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements(policy)
    )
    (cloudwatch,) = [
        s for s in statements(key_policy) if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    # The TLS-only topic policy replaces SNS's default one, so CloudWatch needs its own allow.
    (publish,) = [s for s in statements(policy) if s["Effect"] == "Allow"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish["Action"] == "sns:Publish" and publish["Resource"] == {"Ref": topic_id}
    assert publish["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert not synth.resources("shared", "AWS::SNS::Subscription")


def test_prod_subscribes_its_email_to_the_alarm_topic(prod_synth):
    (subscription,) = prod_synth.resources("shared", "AWS::SNS::Subscription").values()
    topic_id = logical_id(prod_synth.stacks.shared.alarm_topic.topic)

    assert subscription["Properties"] == {
        "Protocol": "email",
        "TopicArn": {"Ref": topic_id},
        "Endpoint": "replace-with-your-oncall@example.com",
    }


def dashboard_body(synth) -> dict:
    _, dashboard = synth.only("shared", "AWS::CloudWatch::Dashboard")
    # The body is a Join with ${AWS::Region} tokens; render them as a plain string.
    body = dashboard["Properties"]["DashboardBody"]
    return json.loads(flatten(body).replace("<AWS::Region>", "eu-west-1"))


def test_one_dashboard_in_the_shared_stack_shows_every_endpoint_mode(synth):
    body = dashboard_body(synth)
    headers = [w["properties"]["markdown"] for w in body["widgets"] if w["type"] == "text"]
    graphs = {
        w["properties"]["title"]: w["properties"]["metrics"] for w in body["widgets"] if w["type"] == "metric"
    }

    assert headers == [
        "## Real-time: `Detectron2-Realtime-g5-xlarge`",
        "## Async: `Detectron2-Async-g5-xlarge`",
        "## Serverless: `Detectron2-Serverless`",
    ]
    assert sorted(graphs) == sorted(
        [
            *(f"Real-time: {g}" for g in ("requests and errors", "latency", "utilization (%)", "instances")),
            *(
                f"Async: {g}"
                for g in ("requests and errors", "latency", "queue", "utilization (%)", "instances")
            ),
            *(f"Serverless: {g}" for g in ("requests and errors", "latency")),
        ]
    )

    def names(title):
        return [(m[0], m[1], m[-1]["stat"]) for m in graphs[title]]

    assert names("Real-time: latency") == [
        ("AWS/SageMaker", "ModelLatency", "p50"),
        ("AWS/SageMaker", "ModelLatency", "p99"),
    ]
    assert names("Serverless: latency")[2:] == [
        ("AWS/SageMaker", "ModelSetupTime", "p50"),
        ("AWS/SageMaker", "ModelSetupTime", "p99"),
    ]
    assert names("Async: queue") == [
        ("AWS/SageMaker", "ApproximateBacklogSize", "Maximum"),
        ("AWS/SageMaker", "ApproximateAgeOfOldestRequest", "Maximum"),
    ]
    assert [m[1] for m in graphs["Real-time: utilization (%)"]] == [
        "CPUUtilization",
        "MemoryUtilization",
        "GPUUtilization",
        "GPUMemoryUtilization",
    ]
    assert names("Async: instances") == [("/aws/sagemaker/Endpoints", "CPUUtilization", "SampleCount")]
    assert [m[1] for m in graphs["Async: requests and errors"]] == [
        "Invocation4XXErrors",
        "Invocation5XXErrors",
        "InvocationFailures",
    ]


def test_the_dashboard_needs_no_reference_to_a_mode_stack(synth):
    _, dashboard = synth.only("shared", "AWS::CloudWatch::Dashboard")

    assert "Fn::GetStackOutput" not in json.dumps(dashboard) and "Fn::ImportValue" not in json.dumps(
        dashboard
    )
