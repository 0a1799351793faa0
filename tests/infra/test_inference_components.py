"""config/scale-to-zero.json: the real-time model as an inference component that scales to zero."""

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template
from syrupy.extensions.json import JSONSnapshotExtension

from sagemaker_constructs import InferenceComponentEndpoint
from sagemaker_constructs.inference_component import INITIAL_COPY_COUNT
from sagemaker_constructs.settings import MonitoringConfig, RealtimeConfig
from tests.synthesis import redact_image_hashes

from .cfn import flatten, logical_id
from .test_constructs import caller_statements, model_named
from .test_templates import SERVICE_LINKED_ROLE

GPU_AMI = RealtimeConfig().inference_ami_version


@pytest.fixture(scope="module")
def s2z(shipped):
    return shipped("scale-to-zero")


@pytest.fixture(scope="module")
def endpoint(s2z) -> InferenceComponentEndpoint:
    return s2z.stacks.modes["realtime"].endpoint


# SageMaker writes the name in lower case (ARNs, CloudWatch dimensions, which are case-sensitive).
COMPONENT_NAME = "detectron2scaletozero-realtime-component"


def component_name(endpoint) -> str:
    """The component's name as the template spells it."""
    return flatten(cdk.Stack.of(endpoint).resolve(endpoint.inference_component_name))


def test_the_component_name_is_one_lower_case_literal_wherever_the_template_names_it(s2z, endpoint):
    """The component, its scalable target, its alarms' dimensions and the output: one literal, so
    the copy scaling and the alarms watch the series SageMaker publishes (by its lower-case name)."""
    _, component = s2z.only("realtime", "AWS::SageMaker::InferenceComponent")
    _, target = s2z.only("realtime", "AWS::ApplicationAutoScaling::ScalableTarget")
    dimensions = [
        d["Value"]
        for alarm in s2z.resources("realtime", "AWS::CloudWatch::Alarm").values()
        for d in alarm["Properties"].get("Dimensions", [])
        if d["Name"] == "InferenceComponentName"
    ]
    output = s2z.template("realtime")["Outputs"]["InferenceComponentName"]["Value"]

    assert component_name(endpoint) == COMPONENT_NAME == COMPONENT_NAME.lower()
    assert component["Properties"]["InferenceComponentName"] == COMPONENT_NAME
    assert target["Properties"]["ResourceId"] == f"inference-component/{COMPONENT_NAME}"
    assert dimensions and set(dimensions) == {COMPONENT_NAME}
    assert output == COMPONENT_NAME


def test_only_the_shared_and_realtime_stacks_are_built(s2z):
    assert sorted(s.stack_name for s in s2z.assembly.stacks) == [
        "Detectron2ScaleToZero-Realtime",
        "Detectron2ScaleToZero-Shared",
    ]


@pytest.mark.parametrize("key", ["shared", "realtime"])
def test_template_snapshot(s2z, key, snapshot):
    assert redact_image_hashes(s2z, s2z.template(key)) == snapshot.use_extension(JSONSnapshotExtension)


def test_endpoint_config_variant_has_managed_instance_scaling_to_zero_routing_and_no_model(s2z):
    _, config = s2z.only("realtime", "AWS::SageMaker::EndpointConfig")
    (variant,) = config["Properties"]["ProductionVariants"]

    assert variant == {
        "VariantName": "AllTraffic",
        "InstanceType": "ml.g5.xlarge",
        "InitialInstanceCount": 1,
        "InferenceAmiVersion": GPU_AMI,
        "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 2},
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    }


def test_endpoint_config_role_is_the_shared_execution_role(s2z):
    _, config = s2z.only("realtime", "AWS::SageMaker::EndpointConfig")
    _, model = s2z.only("realtime", "AWS::SageMaker::Model")

    assert config["Properties"]["ExecutionRoleArn"] == model["Properties"]["ExecutionRoleArn"]
    assert "ExecutionRole" in flatten(config["Properties"]["ExecutionRoleArn"])


def test_endpoint_update_keeps_the_managed_instance_count_and_has_no_blue_green_policy(s2z):
    _, endpoint = s2z.only("realtime", "AWS::SageMaker::Endpoint")

    assert endpoint["Properties"]["RetainAllVariantProperties"] is True
    # New model versions update the component, not the endpoint.
    assert "DeploymentConfig" not in endpoint["Properties"]


def test_the_endpoint_is_monitored_like_a_classic_one(s2z, endpoint):
    names = {
        a["Properties"]["MetricName"] for a in s2z.resources("realtime", "AWS::CloudWatch::Alarm").values()
    }

    assert {"Invocation5XXErrors", "ModelLatency", "NoCapacityInvocationFailures"} <= names
    assert endpoint.metrics.endpoint_name == "Detectron2ScaleToZero-Realtime"


def test_component_runs_the_registered_model_with_the_configured_compute(s2z, endpoint):
    endpoint_id, _ = s2z.only("realtime", "AWS::SageMaker::Endpoint")
    model_id, _ = s2z.only("realtime", "AWS::SageMaker::Model")
    _, component = s2z.only("realtime", "AWS::SageMaker::InferenceComponent")

    assert component["Properties"] == {
        "InferenceComponentName": COMPONENT_NAME,
        "EndpointName": {"Fn::GetAtt": [endpoint_id, "EndpointName"]},
        "VariantName": "AllTraffic",
        "Specification": {
            "ModelName": {"Fn::GetAtt": [model_id, "ModelName"]},
            "ComputeResourceRequirements": {
                "NumberOfAcceleratorDevicesRequired": 1,
                "NumberOfCpuCoresRequired": 2,
                "MinMemoryRequiredInMb": 8192,
            },
            "StartupParameters": {
                "ContainerStartupHealthCheckTimeoutInSeconds": 900,
                "ModelDataDownloadTimeoutInSeconds": 900,
            },
        },
        "RuntimeConfig": {"CopyCount": 1},
    }


def test_a_component_that_may_run_one_copy_gets_no_rolling_update_policy(s2z, endpoint):
    # AWS documents MaximumBatchSize as 5-50 % of the copy count: nothing for 0 or 1 copies.
    _, component = s2z.only("realtime", "AWS::SageMaker::InferenceComponent")

    assert endpoint.scaling is not None and "DeploymentConfig" not in component["Properties"]
    assert not s2z.resources("realtime", "AWS::IAM::Policy")


def test_the_component_alarms_watch_the_component_metrics(s2z, endpoint):
    alarms = [
        endpoint.alarms.alarms[name] for name in ("Invocation5XXErrors", "ModelErrors", "ModelLatencyP99")
    ]
    for alarm in alarms:
        properties = s2z.template("realtime")["Resources"][logical_id(alarm)]["Properties"]
        assert properties["Namespace"] == "AWS/SageMaker"
        assert properties["Dimensions"] == [{"Name": "InferenceComponentName", "Value": COMPONENT_NAME}]
    memory = s2z.template("realtime")["Resources"][logical_id(endpoint.alarms.alarms["MemoryUtilization"])]
    assert memory["Properties"]["Namespace"] == "/aws/sagemaker/InferenceComponents"


def test_the_endpoint_config_isolates_the_component_from_the_network(s2z):
    _, config = s2z.only("realtime", "AWS::SageMaker::EndpointConfig")

    assert config["Properties"]["EnableNetworkIsolation"] is True


def test_two_or_more_copies_roll_one_at_a_time_and_roll_back_on_alarms_sagemaker_may_read():
    stack, endpoint = component_endpoint(
        {"max_instance_count": 4, "scaling": {"min_copies": 2, "max_copies": 4}},
        monitoring=MonitoringConfig(),
    )
    template = Template.from_stack(stack).to_json()
    component_id = logical_id(endpoint.component)
    deployment = template["Resources"][component_id]["Properties"]["DeploymentConfig"]

    assert deployment["RollingUpdatePolicy"] == {
        "MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
        "WaitIntervalInSeconds": 300,
    }
    assert endpoint.alarms is not None
    assert [a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]] == [
        {"Ref": logical_id(alarm)} for alarm in endpoint.alarms.rollback
    ]
    ((policy_id, policy),) = [
        (k, r["Properties"]) for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Policy"
    ]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Action": "cloudwatch:DescribeAlarms",
            "Effect": "Allow",
            "Resource": [{"Fn::GetAtt": [logical_id(a), "Arn"]} for a in endpoint.alarms.rollback],
        }
    ]
    assert policy["Roles"] == [{"Ref": logical_id(endpoint_role(stack))}, "execution"]
    assert policy_id in template["Resources"][component_id]["DependsOn"]


def test_the_model_behind_the_component_is_the_gpu_specification_of_the_current_version(s2z):
    _, model = s2z.only("realtime", "AWS::SageMaker::Model")
    container = model["Properties"]["PrimaryContainer"]

    assert container["Environment"] == {"INFERENCE_MODE": "realtime"}
    assert "InferenceSpecificationName" not in container
    assert "SsmParameterValue" in flatten(container["ModelPackageName"])


def test_copy_count_target_scales_the_component_between_zero_and_max_copies(s2z, endpoint):
    _, target = s2z.only("realtime", "AWS::ApplicationAutoScaling::ScalableTarget")
    properties = target["Properties"]

    assert properties["ResourceId"] == f"inference-component/{COMPONENT_NAME}"
    # Registering waits for the component its literal name refers to.
    assert logical_id(endpoint.component) in target["DependsOn"]
    assert properties["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    assert properties["ServiceNamespace"] == "sagemaker"
    assert (properties["MinCapacity"], properties["MaxCapacity"]) == (0, 2)
    assert flatten(properties["RoleARN"]) == SERVICE_LINKED_ROLE


def policies(synth, policy_type: str) -> list[dict]:
    return [
        p["Properties"]
        for p in synth.resources("realtime", "AWS::ApplicationAutoScaling::ScalingPolicy").values()
        if p["Properties"]["PolicyType"] == policy_type
    ]


def test_copies_track_invocations_per_copy(s2z):
    target_id, _ = s2z.only("realtime", "AWS::ApplicationAutoScaling::ScalableTarget")
    (tracking,) = policies(s2z, "TargetTrackingScaling")

    assert tracking["ScalingTargetId"] == {"Ref": target_id}
    assert tracking["TargetTrackingScalingPolicyConfiguration"] == {
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"
        },
        "TargetValue": 100,
        "ScaleInCooldown": 900,
        "ScaleOutCooldown": 60,
    }


def test_a_step_policy_adds_one_copy_and_waits_out_a_cold_start(s2z):
    target_id, _ = s2z.only("realtime", "AWS::ApplicationAutoScaling::ScalableTarget")
    (step,) = policies(s2z, "StepScaling")

    assert step["ScalingTargetId"] == {"Ref": target_id}
    assert step["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ChangeInCapacity",
        "Cooldown": 600,
        "MetricAggregationType": "Maximum",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
    }


def test_the_first_call_without_a_copy_raises_the_alarm_that_drives_the_step(s2z, endpoint):
    (alarm,) = [
        a
        for a in s2z.resources("realtime", "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "NoCapacityInvocationFailures"
    ]
    (step_id,) = [
        resource_id
        for resource_id, p in s2z.resources("realtime", "AWS::ApplicationAutoScaling::ScalingPolicy").items()
        if p["Properties"]["PolicyType"] == "StepScaling"
    ]
    properties = alarm["Properties"]

    assert properties["Namespace"] == "AWS/SageMaker"
    assert properties["MetricName"] == "NoCapacityInvocationFailures"
    assert [(d["Name"], flatten(d["Value"])) for d in properties["Dimensions"]] == [
        ("InferenceComponentName", component_name(endpoint))
    ]
    assert (properties["Statistic"], properties["Period"]) == ("Sum", 60)
    # >= 1: one waiting caller is enough (GreaterThanThreshold 1 would need two, stdapi-ai/stdapi.ai#43).
    assert (properties["ComparisonOperator"], properties["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert (properties["EvaluationPeriods"], properties["DatapointsToAlarm"]) == (1, 1)
    assert properties["TreatMissingData"] == "notBreaching"
    assert properties["AlarmActions"] == [{"Ref": step_id}]


def test_instances_are_never_scaled_by_application_auto_scaling(s2z):
    (target,) = s2z.resources("realtime", "AWS::ApplicationAutoScaling::ScalableTarget").values()

    assert target["Properties"]["ScalableDimension"] != "sagemaker:variant:DesiredInstanceCount"


def test_stack_outputs_the_component_and_endpoint_names(s2z, endpoint):
    outputs = s2z.template("realtime")["Outputs"]

    assert flatten(outputs["InferenceComponentName"]["Value"]) == component_name(endpoint)
    assert outputs["EndpointName"]["Value"] == "Detectron2ScaleToZero-Realtime" == endpoint.endpoint_name


def test_the_execution_role_gets_no_capture_prefix_without_data_capture(s2z):
    assert "capture/" not in flatten(s2z.template("shared"))


# --- the construct on its own --------------------------------------------------------------------


def component_endpoint(
    components: dict, monitoring: MonitoringConfig | None = None, **realtime
) -> tuple[cdk.Stack, InferenceComponentEndpoint]:
    stack = cdk.Stack(cdk.App(), "Test")
    role = iam.Role(stack, "Execution", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    config = RealtimeConfig.model_validate({"scaling": None, "inference_components": components, **realtime})
    return stack, InferenceComponentEndpoint(
        stack, "Ic", model=model_named("m"), config=config, role=role, monitoring=monitoring
    )


def endpoint_role(stack: cdk.Stack) -> iam.Role:
    role = stack.node.find_child("Execution")
    assert isinstance(role, iam.Role)
    return role


def resources_of(stack: cdk.Stack, resource_type: str) -> list[dict]:
    template = Template.from_stack(stack).to_json()
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == resource_type]


@pytest.mark.parametrize(
    "scaling",
    [
        {"min_copies": 0, "max_copies": 2},
        {"min_copies": 2, "max_copies": 2},
        {"min_copies": 1, "max_copies": 8},
        None,
    ],
)
def test_the_component_is_created_with_one_copy_whatever_the_scaling_bounds(scaling):
    # The template never carries a different copy count, so no deploy is a copy-count change.
    stack, _ = component_endpoint({"max_instance_count": 8, "scaling": scaling}, instance_type="ml.g5.xlarge")

    (component,) = resources_of(stack, "AWS::SageMaker::InferenceComponent")
    assert INITIAL_COPY_COUNT == 1
    assert component["RuntimeConfig"] == {"CopyCount": INITIAL_COPY_COUNT}


def test_a_minimum_of_one_copy_needs_no_way_back_from_zero():
    stack, endpoint = component_endpoint({"scaling": {"min_copies": 1, "max_copies": 2}})

    assert [p["PolicyType"] for p in resources_of(stack, "AWS::ApplicationAutoScaling::ScalingPolicy")] == [
        "TargetTrackingScaling"
    ]
    assert not resources_of(stack, "AWS::CloudWatch::Alarm")
    (target,) = resources_of(stack, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["MinCapacity"] == 1


def test_no_scaling_keeps_the_one_copy():
    stack, endpoint = component_endpoint({"scaling": None})

    assert endpoint.scaling is None
    assert not resources_of(stack, "AWS::ApplicationAutoScaling::ScalableTarget")


def test_concurrent_requests_per_copy_tracks_the_high_resolution_metric_with_its_own_default_target():
    stack, _ = component_endpoint({"scaling": {"metric": "concurrent_requests_per_copy"}})

    (tracking,) = [
        p["TargetTrackingScalingPolicyConfiguration"]
        for p in resources_of(stack, "AWS::ApplicationAutoScaling::ScalingPolicy")
        if p["PolicyType"] == "TargetTrackingScaling"
    ]
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution"
    }
    assert tracking["TargetValue"] == 2


def test_a_cpu_instance_requests_no_accelerator_and_gets_no_gpu_ami():
    stack, _ = component_endpoint(
        {"accelerators": 0, "cpu_cores": 2, "memory_mb": 4096, "scaling": None}, instance_type="ml.m5.xlarge"
    )

    (component,) = resources_of(stack, "AWS::SageMaker::InferenceComponent")
    assert component["Specification"]["ComputeResourceRequirements"] == {
        "NumberOfCpuCoresRequired": 2,
        "MinMemoryRequiredInMb": 4096,
    }
    (config,) = resources_of(stack, "AWS::SageMaker::EndpointConfig")
    assert "InferenceAmiVersion" not in config["ProductionVariants"][0]


def test_grant_invoke_covers_the_endpoint_and_the_component():
    stack, endpoint = component_endpoint({})
    caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())

    endpoint.grant_invoke(caller)

    assert caller_statements(stack, caller) == [
        {
            "Action": "sagemaker:InvokeEndpoint",
            "Resource": sorted(
                [
                    f"<{logical_id(endpoint.endpoint)}>",
                    f"<{logical_id(endpoint.component)}.InferenceComponentArn>",
                ]
            ),
        }
    ]
