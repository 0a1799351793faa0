"""Constructs on their own, in bare stacks: grants, model data, image choice, registry options."""

import tarfile
from types import SimpleNamespace

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template

from sagemaker_constructs import (
    AsyncEndpoint,
    EndpointMetrics,
    InferenceDashboard,
    InferenceImages,
    ModelData,
    ModelRegistry,
    PackagedModel,
    RealtimeEndpoint,
)
from sagemaker_constructs.instance_types import is_burstable, is_gpu, is_neuron
from sagemaker_constructs.settings import AsyncConfig, ModelVersion, MonitoringConfig, RealtimeConfig
from sagemaker_constructs.storage import ArtifactStore

from .cfn import flatten, logical_id


@pytest.fixture
def stack() -> cdk.Stack:
    return cdk.Stack(cdk.App(), "Test")


# The role SageMaker runs a model with (an imported one: no stack of the test owns it).
EXECUTION_ROLE_ARN = "arn:aws:iam::123456789012:role/execution"
EXECUTION_ROLE = iam.Role.from_role_arn(cdk.Stack(cdk.App(), "Roles"), "Execution", EXECUTION_ROLE_ARN)


def model_named(name: str):
    """Endpoints only read `model_name` and `role` from their PackagedModel."""
    return SimpleNamespace(model_name=name, role=EXECUTION_ROLE)


def caller_statements(stack: cdk.Stack, caller: iam.Role) -> list[dict]:
    template = Template.from_stack(stack).to_json()
    (policy,) = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy" and r["Properties"]["Roles"] == [{"Ref": logical_id(caller)}]
    ]
    return [
        {
            "Action": s["Action"],
            "Resource": flatten(s["Resource"])
            if not isinstance(s["Resource"], list)
            else sorted(flatten(r) for r in s["Resource"]),
        }
        for s in policy
    ]


def test_realtime_grant_invoke_is_scoped_to_the_endpoint(stack):
    endpoint = RealtimeEndpoint(stack, "Realtime", model=model_named("m"), config=RealtimeConfig())
    caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())

    endpoint.grant_invoke(caller)

    assert caller_statements(stack, caller) == [
        {"Action": "sagemaker:InvokeEndpoint", "Resource": f"<{logical_id(endpoint.endpoint)}>"}
    ]


def test_async_grant_invoke_covers_the_request_and_result_prefixes_and_the_key(stack):
    store = ArtifactStore(stack, "Store")
    role = iam.Role(stack, "Execution", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    endpoint = AsyncEndpoint(
        stack, "Async", model=model_named("m"), config=AsyncConfig(), store=store, role=role
    )
    caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())

    endpoint.grant_invoke(caller)

    bucket = f"<{logical_id(store.bucket)}.Arn>"
    assert caller_statements(stack, caller) == [
        {"Action": "sagemaker:InvokeEndpointAsync", "Resource": f"<{logical_id(endpoint.endpoint)}>"},
        {"Action": "s3:PutObject", "Resource": f"{bucket}/async/input/*"},
        {"Action": "s3:GetObject", "Resource": [f"{bucket}/async/failure/*", f"{bucket}/async/output/*"]},
        {
            "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": f"<{logical_id(store.key)}.Arn>",
        },
    ]


def test_local_model_tarball_becomes_an_s3_asset_readable_object_by_object(stack, tmp_path):
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz"):
        pass
    data = ModelData(stack, "ModelData", location=str(tarball))
    reader = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))

    data.grant_read(reader)

    url = flatten(stack.resolve(data.s3_url))
    assert url.startswith("s3://cdk-hnb659fds-assets-") and url.endswith(".gz")
    (statement,) = caller_statements(stack, reader)
    assert statement["Action"] == "s3:GetObject"
    assert statement["Resource"].endswith(url.split("/")[-1])


def test_existing_s3_model_data_is_used_in_place(stack):
    data = ModelData(stack, "ModelData", location="s3://my-models/detectron2/v3/model.tar.gz")
    reader = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))

    data.grant_read(reader)

    assert data.s3_url == "s3://my-models/detectron2/v3/model.tar.gz"
    assert caller_statements(stack, reader) == [
        {
            "Action": "s3:GetObject",
            "Resource": "arn:<AWS::Partition>:s3:::my-models/detectron2/v3/model.tar.gz",
        }
    ]


@pytest.mark.parametrize(
    ("instance_type", "specification"),
    [
        ("ml.g5.xlarge", None),
        ("ml.g4dn.xlarge", None),
        ("ml.p3.2xlarge", None),
        ("ml.m5.xlarge", "cpu"),
        ("ml.c6i.2xlarge", "cpu"),
        (None, "cpu"),
    ],
)
def test_gpu_families_run_the_primary_specification_everything_else_the_cpu_one(instance_type, specification):
    assert ModelRegistry.specification_for(instance_type) == specification


def test_instance_type_families():
    assert [is_gpu(t) for t in ("ml.g5.xlarge", "ml.p4d.24xlarge", "ml.m5.large", "ml.inf2.xlarge")] == [
        True,
        True,
        False,
        False,
    ]
    assert [is_burstable(t) for t in ("ml.t2.medium", "ml.t3.large", "ml.trn1.2xlarge", "ml.m5.large")] == [
        True,
        True,
        False,
        False,
    ]
    assert [is_neuron(t) for t in ("ml.inf1.xlarge", "ml.trn1.2xlarge", "ml.g5.xlarge")] == [
        True,
        True,
        False,
    ]


def make_registry(stack: cdk.Stack, directory, **overrides) -> ModelRegistry:
    (directory / "Dockerfile").write_text("FROM scratch AS cpu\nFROM cpu AS gpu\n")
    props = {
        "group_name": "team-a-models",
        "description": "d",
        "group_description": "g",
        "approval_status": "Approved",
        "images": InferenceImages(stack, "Images", directory=directory),
        "model_data": ModelData(stack, "ModelData", location="s3://b-1/m.tar.gz"),
        "package_arn_parameter_name": "/TeamA/model-package-arn",
        **overrides,
    }
    return ModelRegistry(stack, "Registry", **props)


def test_registry_takes_its_approval_status_and_group_from_the_caller(stack, tmp_path):
    registry = make_registry(stack, tmp_path, approval_status="PendingManualApproval")

    template = Template.from_stack(stack)

    template.has_resource_properties(
        "AWS::SageMaker::ModelPackage",
        {"ModelApprovalStatus": "PendingManualApproval", "ModelPackageGroupName": "team-a-models"},
    )
    template.has_resource_properties("AWS::SSM::Parameter", {"Name": "/TeamA/model-package-arn"})
    assert registry.package_arn_for(stack) == registry.package_arn


def test_a_cpu_instance_type_deploys_the_cpu_specification_from_another_stack(tmp_path):
    app = cdk.App()
    registry = make_registry(cdk.Stack(app, "Shared"), tmp_path)
    mode_stack = cdk.Stack(app, "Realtime")
    role = iam.Role(mode_stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))

    PackagedModel(
        mode_stack, "Model", registry=registry, role=role, mode="realtime", instance_type="ml.m5.xlarge"
    )

    template = Template.from_stack(mode_stack).to_json()
    (model,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Model"]
    (parameter_id,) = [
        k for k, p in template["Parameters"].items() if p.get("Default") == "/TeamA/model-package-arn"
    ]
    assert model["Properties"]["PrimaryContainer"] == {
        "Environment": {"INFERENCE_MODE": "realtime"},
        "InferenceSpecificationName": "cpu",
        "ModelPackageName": {"Ref": parameter_id},
    }
    assert model["Properties"]["EnableNetworkIsolation"] is True


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            ModelVersion(number=3),
            "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/team-a-models/3",
        ),
        (
            ModelVersion.parse("arn:aws:sagemaker:eu-west-1:123456789012:model-package/team-a-models/4"),
            "arn:aws:sagemaker:eu-west-1:123456789012:model-package/team-a-models/4",
        ),
    ],
)
def test_a_model_of_a_pinned_version_names_it_literally_and_needs_no_ssm(tmp_path, version, expected):
    """The primitive each mode (and each variant of an endpoint) uses to deploy a chosen version."""
    app = cdk.App()
    registry = make_registry(cdk.Stack(app, "Shared"), tmp_path)
    mode_stack = cdk.Stack(app, "Realtime")
    role = iam.Role(mode_stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))

    model = PackagedModel(
        mode_stack,
        "Model",
        registry=registry,
        role=role,
        mode="realtime",
        instance_type="ml.g5.xlarge",
        version=version,
    )

    template = Template.from_stack(mode_stack).to_json()
    (resource,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Model"]
    assert flatten(resource["Properties"]["PrimaryContainer"]["ModelPackageName"]) == expected
    assert all(
        p.get("Default") != "/TeamA/model-package-arn" for p in template.get("Parameters", {}).values()
    )
    assert model.version == version


def test_the_dashboard_refuses_an_endpoint_it_cannot_name(stack):
    dashboard = InferenceDashboard(stack, "Dashboard")
    token = cdk.Fn.ref("SomeEndpoint")

    with pytest.raises(ValueError, match="Real-time: the dashboard needs the endpoint's literal name"):
        dashboard.add_endpoint("Real-time", EndpointMetrics(token, "AllTraffic", "realtime"))


def test_an_endpoint_built_alone_rolls_back_on_its_own_alarms(stack):
    config = RealtimeConfig.model_validate(
        {
            "initial_instance_count": 4,
            "scaling": {"min_capacity": 4, "max_capacity": 8},
            "rollout": {
                "traffic_routing": "LINEAR",
                "linear_step_size": {"type": "CAPACITY_PERCENT", "value": 25},
                "wait_interval_seconds": 120,
            },
        }
    )

    endpoint = RealtimeEndpoint(
        stack,
        "Realtime",
        model=model_named("m"),
        config=config,
        monitoring=MonitoringConfig(),
        name_prefix="Team-A",
    )

    template = Template.from_stack(stack).to_json()
    properties = template["Resources"][logical_id(endpoint.endpoint)]["Properties"]
    assert properties["EndpointName"] == "Team-A-g5-xlarge"
    assert properties["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "LINEAR",
        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        "WaitIntervalInSeconds": 120,
    }
    assert endpoint.alarms is not None
    assert [
        a["AlarmName"] for a in properties["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    ] == [{"Ref": logical_id(alarm)} for alarm in endpoint.alarms.rollback]
    # No topic given: the alarms exist without actions.
    assert all(
        "AlarmActions" not in template["Resources"][logical_id(a)]["Properties"]
        for a in endpoint.alarms.rollback
    )
    # SageMaker reads them with the model's role during the deployment (auto-rollback needs it).
    (policy_id, policy), *others = [
        (k, r["Properties"]) for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Policy"
    ]
    assert others == []
    assert policy["Roles"] == ["execution"]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Action": "cloudwatch:DescribeAlarms",
            "Effect": "Allow",
            "Resource": [{"Fn::GetAtt": [logical_id(alarm), "Arn"]} for alarm in endpoint.alarms.rollback],
        }
    ]
    assert policy_id in template["Resources"][logical_id(endpoint.endpoint)]["DependsOn"]
