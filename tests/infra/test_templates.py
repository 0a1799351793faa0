"""Fine-grained assertions on the synthesized templates of the default configuration."""

import json

import pytest

from sagemaker_constructs.registry import SUPPORTED_CONTENT_TYPES
from sagemaker_constructs.settings import PLACEHOLDER_MODEL_DATA

from .cfn import as_list, flatten, logical_id, policy_documents, statements

MODES = ["realtime", "async", "serverless", "batch"]
STACK_KEYS = ["shared", *MODES]
PACKAGE_ARN_PARAMETER = "/Detectron2/model-package-arn"
SERVICE_LINKED_ROLE = (
    "arn:<AWS::Partition>:iam::<AWS::AccountId>:role/aws-service-role/sagemaker.application-autoscaling"
    ".amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
SSL_ONLY = {"Bool": {"aws:SecureTransport": "false"}}


def test_one_template_per_stack(synth):
    names = sorted(stack.stack_name for stack in synth.assembly.stacks)

    assert names == [
        "Detectron2-Async",
        "Detectron2-Batch",
        "Detectron2-Realtime",
        "Detectron2-Serverless",
        "Detectron2-Shared",
    ]
    assert sorted(path.name for path in synth.outdir.glob("*.template.json")) == [
        f"{n}.template.json" for n in names
    ]


# --- shared: storage --------------------------------------------------------------------------


def test_kms_key_rotates(synth):
    _, key = synth.only("shared", "AWS::KMS::Key")

    assert key["Properties"]["EnableKeyRotation"] is True


def bucket_policy_of(synth, bucket_id: str) -> dict:
    (policy,) = [
        p
        for p in synth.resources("shared", "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    return policy["Properties"]["PolicyDocument"]


def denies_insecure_transport(document: dict) -> bool:
    return any(s["Effect"] == "Deny" and s.get("Condition") == SSL_ONLY for s in statements(document))


def test_artifacts_bucket_is_kms_encrypted_versioned_private_ssl_only_and_logged(synth):
    store = synth.stacks.shared.store
    bucket_id, key_id, log_bucket_id = (
        logical_id(store.bucket),
        logical_id(store.key),
        logical_id(store.access_log_bucket),
    )
    properties = synth.resources("shared", "AWS::S3::Bucket")[bucket_id]["Properties"]

    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
                "SSEAlgorithm": "aws:kms",
            },
        }
    ]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": log_bucket_id}
    assert denies_insecure_transport(bucket_policy_of(synth, bucket_id))


def test_async_requests_results_and_failures_expire_after_the_configured_days(synth):
    bucket_id = logical_id(synth.stacks.shared.store.bucket)
    rules = synth.resources("shared", "AWS::S3::Bucket")[bucket_id]["Properties"]["LifecycleConfiguration"]

    expiring = {r["Prefix"]: r["ExpirationInDays"] for r in rules["Rules"] if "Prefix" in r}

    assert expiring == {"async/input/": 7, "async/output/": 30, "async/failure/": 30}
    assert all(r["Status"] == "Enabled" for r in rules["Rules"])


def test_access_log_bucket_is_encrypted_private_and_ssl_only(synth):
    log_bucket_id = logical_id(synth.stacks.shared.store.access_log_bucket)
    properties = synth.resources("shared", "AWS::S3::Bucket")[log_bucket_id]["Properties"]

    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert all(properties["PublicAccessBlockConfiguration"].values())
    assert denies_insecure_transport(bucket_policy_of(synth, log_bucket_id))


def test_data_buckets_and_key_survive_stack_deletion(synth):
    retained = {**synth.resources("shared", "AWS::S3::Bucket"), **synth.resources("shared", "AWS::KMS::Key")}

    assert {r["DeletionPolicy"] for r in retained.values()} == {"Retain"}


# --- shared: images, registry, role -----------------------------------------------------------


def test_two_image_assets_build_the_gpu_and_cpu_targets_of_the_container(synth):
    manifest = json.loads((synth.outdir / "Detectron2-Shared.assets.json").read_text())
    sources = {
        image["source"]["dockerBuildTarget"]: (asset_hash, image["source"])
        for asset_hash, image in manifest["dockerImages"].items()
    }
    images = synth.stacks.shared.images

    assert set(sources) == {"gpu", "cpu"}
    assert sources["gpu"][0] == images.gpu.asset_hash
    assert sources["cpu"][0] == images.cpu.asset_hash
    assert {source["platform"] for _, source in sources.values()} == {"linux/amd64"}


def test_model_package_registers_gpu_primary_and_cpu_additional_specification(synth):
    images = synth.stacks.shared.images
    group_id, group = synth.only("shared", "AWS::SageMaker::ModelPackageGroup")
    _, package = synth.only("shared", "AWS::SageMaker::ModelPackage")
    properties = package["Properties"]
    primary = properties["InferenceSpecification"]
    (additional,) = properties["AdditionalInferenceSpecifications"]

    assert group["Properties"]["ModelPackageGroupName"] == "detectron2-mask-rcnn"
    assert properties["ModelPackageGroupName"] == "detectron2-mask-rcnn"
    assert package["DependsOn"] == [group_id]
    assert properties["ModelApprovalStatus"] == "Approved"
    assert [flatten(c["Image"]).split(":")[-1] for c in primary["Containers"]] == [images.gpu.asset_hash]
    assert additional["Name"] == "cpu"
    assert [flatten(c["Image"]).split(":")[-1] for c in additional["Containers"]] == [images.cpu.asset_hash]
    for specification in (primary, additional):
        assert [c["ModelDataUrl"] for c in specification["Containers"]] == [PLACEHOLDER_MODEL_DATA]
        assert specification["SupportedContentTypes"] == SUPPORTED_CONTENT_TYPES
        assert specification["SupportedResponseMIMETypes"] == ["application/json"]


@pytest.mark.parametrize(
    "resource_type", ["AWS::SageMaker::ModelPackage", "AWS::SageMaker::ModelPackageGroup"]
)
def test_registered_versions_and_their_group_survive_replacement_and_stack_deletion(synth, resource_type):
    # A new image or model replaces the version; the old one must stay registered (history, rollback).
    _, resource = synth.only("shared", resource_type)

    assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_model_package_arn_is_published_for_the_mode_stacks(synth):
    package_id, _ = synth.only("shared", "AWS::SageMaker::ModelPackage")
    _, parameter = synth.only("shared", "AWS::SSM::Parameter")

    assert parameter["Properties"]["Name"] == PACKAGE_ARN_PARAMETER
    assert parameter["Properties"]["Value"] == {"Fn::GetAtt": [package_id, "ModelPackageArn"]}


def execution_role_statements(synth) -> list[dict]:
    role_id = logical_id(synth.stacks.shared.execution_role)
    documents = [
        p["Properties"]["PolicyDocument"]
        for p in synth.resources("shared", "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    return [s for document in documents for s in statements(document)]


def test_execution_role_is_assumed_by_sagemaker_without_managed_policies(synth):
    role = synth.resources("shared", "AWS::IAM::Role")[logical_id(synth.stacks.shared.execution_role)]

    assert statements(role["Properties"]["AssumeRolePolicyDocument"]) == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}}
    ]
    assert "ManagedPolicyArns" not in role["Properties"]


def test_execution_role_pulls_from_the_repositories_of_both_images(synth):
    shared = synth.stacks.shared
    repositories = {
        json.dumps(shared.resolve(image.repository.repository_arn))
        for image in (shared.images.gpu, shared.images.cpu)
    }
    (pull,) = [s for s in execution_role_statements(synth) if "ecr:BatchGetImage" in as_list(s["Action"])]

    assert sorted(as_list(pull["Action"])) == [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ]
    assert {json.dumps(r) for r in as_list(pull["Resource"])} == repositories


def test_execution_role_s3_access_is_scoped_to_the_model_and_the_inference_prefixes(synth):
    bucket = f"<{logical_id(synth.stacks.shared.store.bucket)}.Arn>"
    access: dict[str, set[str]] = {}
    for statement in execution_role_statements(synth):
        for action in as_list(statement["Action"]):
            if action.startswith("s3:"):
                access.setdefault(action, set()).update(flatten(r) for r in as_list(statement["Resource"]))

    assert access == {
        "s3:GetObject": {
            "arn:<AWS::Partition>:s3:::replace-with-your-bucket/detectron2/model.tar.gz",
            # Versions registered with `d2sm register`, deployable once pinned.
            f"{bucket}/models/*",
            f"{bucket}/async/input/*",
            f"{bucket}/batch/input/*",
        },
        "s3:ListBucket": {bucket},
        "s3:PutObject": {f"{bucket}/async/output/*", f"{bucket}/async/failure/*", f"{bucket}/batch/output/*"},
        "s3:AbortMultipartUpload": {
            f"{bucket}/async/output/*",
            f"{bucket}/async/failure/*",
            f"{bucket}/batch/output/*",
        },
    }
    (listing,) = [s for s in execution_role_statements(synth) if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {
        "StringLike": {"s3:prefix": ["models/*", "async/input/*", "batch/input/*"]}
    }


def test_execution_role_wildcard_resources_are_only_for_actions_without_resource_scoping(synth):
    unscoped = [s for s in execution_role_statements(synth) if s["Resource"] == "*"]

    assert sorted(action for s in unscoped for action in as_list(s["Action"])) == [
        "cloudwatch:PutMetricData",
        "ecr:GetAuthorizationToken",
    ]
    (metrics,) = [s for s in unscoped if s["Action"] == "cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}


# --- every stack: IAM hygiene and names --------------------------------------------------------


@pytest.mark.parametrize("key", STACK_KEYS)
def test_no_managed_policies_at_all(synth, key):
    template = synth.template(key)

    assert not synth.resources(key, "AWS::IAM::ManagedPolicy")
    assert all(
        "ManagedPolicyArns" not in r["Properties"] for r in synth.resources(key, "AWS::IAM::Role").values()
    )
    assert "FullAccess" not in json.dumps(template)


@pytest.mark.parametrize("key", STACK_KEYS)
def test_no_wildcard_action_in_any_allow_statement(synth, key):
    wildcards = [
        (resource_id, kind, statement)
        for resource_id, kind, document in policy_documents(synth.template(key))
        for statement in statements(document)
        if statement["Effect"] == "Allow" and any("*" in action for action in as_list(statement["Action"]))
    ]

    # The one exception is CloudFormation's default KMS key policy statement: it hands the key to
    # the account's IAM policies (without it the key would be unmanageable); it grants nobody use.
    expected = []
    if key == "shared":
        key_id = logical_id(synth.stacks.shared.store.key)
        expected = [
            (
                key_id,
                "resource",
                next(
                    s for s in statements(synth.template(key)["Resources"][key_id]["Properties"]["KeyPolicy"])
                ),
            )
        ]
        assert (
            flatten(expected[0][2]["Principal"]["AWS"]) == "arn:<AWS::Partition>:iam::<AWS::AccountId>:root"
        )
        assert expected[0][2]["Action"] == "kms:*"
    assert wildcards == expected


@pytest.mark.parametrize("key", STACK_KEYS)
def test_no_physical_names_that_would_block_replacement(synth, key):
    name_properties = {
        "AWS::SageMaker::Model": "ModelName",
        "AWS::SageMaker::EndpointConfig": "EndpointConfigName",
        "AWS::SNS::Topic": "TopicName",
        "AWS::CloudWatch::Alarm": "AlarmName",
        "AWS::S3::Bucket": "BucketName",
        "AWS::IAM::Role": "RoleName",
        "AWS::KMS::Key": "KeyId",
    }
    named = [
        resource_id
        for resource_id, resource in synth.template(key)["Resources"].items()
        if name_properties.get(resource["Type"]) in resource.get("Properties", {})
    ]

    assert named == []


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("realtime", "Detectron2-Realtime-g5-xlarge"),
        ("async", "Detectron2-Async-g5-xlarge"),
        ("serverless", "Detectron2-Serverless"),
    ],
)
def test_endpoints_are_named_after_their_stack_and_an_autoscaled_variants_instance_type(synth, key, name):
    # EndpointName is the only property whose change replaces an endpoint, so the name changes
    # exactly when a new endpoint is needed (an autoscaled variant's new instance type).
    _, endpoint = synth.only(key, "AWS::SageMaker::Endpoint")

    assert endpoint["Properties"]["EndpointName"] == name
    assert synth.template(key)["Outputs"]["EndpointName"]["Value"] == name


# --- mode stacks: the model ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "specification"), [("realtime", None), ("async", None), ("serverless", "cpu"), ("batch", None)]
)
def test_each_mode_deploys_the_registered_package_with_its_inference_mode(synth, mode, specification):
    _, model = synth.only(mode, "AWS::SageMaker::Model")
    container = model["Properties"]["PrimaryContainer"]
    (parameter_id,) = [
        pid
        for pid, p in synth.template(mode)["Parameters"].items()
        if p.get("Default") == PACKAGE_ARN_PARAMETER
    ]

    assert synth.template(mode)["Parameters"][parameter_id]["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert container["ModelPackageName"] == {"Ref": parameter_id}
    assert container.get("InferenceSpecificationName") == specification
    assert container["Environment"] == {"INFERENCE_MODE": mode}
    assert "Image" not in container and "ModelDataUrl" not in container
    # Serverless endpoints reject network-isolated models.
    assert model["Properties"]["EnableNetworkIsolation"] is (mode != "serverless")
    assert "<Detectron2-Shared:" in flatten(model["Properties"]["ExecutionRoleArn"])


# --- real-time -------------------------------------------------------------------------------


def scaling(synth, key):
    target_id, target = synth.only(key, "AWS::ApplicationAutoScaling::ScalableTarget")
    endpoint_id, endpoint = synth.only(key, "AWS::SageMaker::Endpoint")
    endpoint_name = endpoint["Properties"]["EndpointName"]
    assert target["Properties"]["ResourceId"] == f"endpoint/{endpoint_name}/variant/AllTraffic"
    # The name is a literal; registering the target still waits for the endpoint.
    assert target["DependsOn"] == [endpoint_id]
    assert flatten(target["Properties"]["RoleARN"]) == SERVICE_LINKED_ROLE
    assert target["Properties"]["ServiceNamespace"] == "sagemaker"
    policies = synth.resources(key, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    assert all(p["Properties"]["ScalingTargetId"] == {"Ref": target_id} for p in policies)
    return (
        target["Properties"],
        {p["Properties"]["PolicyType"]: p["Properties"] for p in policies},
        endpoint_name,
    )


def test_realtime_endpoint_runs_the_configured_gpu_variant(synth):
    model_id, _ = synth.only("realtime", "AWS::SageMaker::Model")
    config_id, config = synth.only("realtime", "AWS::SageMaker::EndpointConfig")
    _, endpoint = synth.only("realtime", "AWS::SageMaker::Endpoint")

    assert config["Properties"]["ProductionVariants"] == [
        {
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1,
            "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1",
            "InstanceType": "ml.g5.xlarge",
            "ModelName": {"Fn::GetAtt": [model_id, "ModelName"]},
            "VariantName": "AllTraffic",
            "ContainerStartupHealthCheckTimeoutInSeconds": 900,
            "ModelDataDownloadTimeoutInSeconds": 900,
        }
    ]
    assert "AsyncInferenceConfig" not in config["Properties"]
    assert endpoint["Properties"]["EndpointConfigName"] == {"Fn::GetAtt": [config_id, "EndpointConfigName"]}
    assert endpoint["Properties"]["RetainAllVariantProperties"] is True


def test_realtime_scales_on_invocations_per_instance_and_never_to_zero(synth):
    target, policies, _ = scaling(synth, "realtime")

    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
    assert set(policies) == {"TargetTrackingScaling"}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking == {
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        "ScaleInCooldown": 300,
        "ScaleOutCooldown": 60,
        "TargetValue": 100,
    }
    # No step scaling on a real-time endpoint: HasBacklogWithoutCapacity is an async metric.
    alarms = synth.resources("realtime", "AWS::CloudWatch::Alarm").values()
    assert "HasBacklogWithoutCapacity" not in {a["Properties"]["MetricName"] for a in alarms}


# --- async -----------------------------------------------------------------------------------


def test_async_config_writes_outputs_and_failures_encrypted_and_notifies_both_topics(synth):
    _, config = synth.only("async", "AWS::SageMaker::EndpointConfig")
    endpoint = synth.stacks.modes["async"].endpoint
    async_config = config["Properties"]["AsyncInferenceConfig"]
    output = async_config["OutputConfig"]
    bucket = "<Detectron2-Shared:PublishOutputRefArtifactsBucket88671897B2274564>"

    # Default: 2 per model copy, and the default ml.g5.xlarge has one GPU.
    assert async_config["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 2}
    assert flatten(output["S3OutputPath"]) == f"s3://{bucket}/async/output"
    assert flatten(output["S3FailurePath"]) == f"s3://{bucket}/async/failure"
    assert flatten(output["KmsKeyId"]).startswith("<Detectron2-Shared:PublishOutputFnGetAttArtifactsKey")
    assert output["NotificationConfig"] == {
        "SuccessTopic": {"Ref": logical_id(endpoint.success_topic)},
        "ErrorTopic": {"Ref": logical_id(endpoint.error_topic)},
    }
    assert config["Properties"]["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"


def test_async_topics_are_kms_encrypted_and_ssl_only(synth):
    topics = synth.resources("async", "AWS::SNS::Topic")
    topic_policies = synth.resources("async", "AWS::SNS::TopicPolicy").values()
    _, config = synth.only("async", "AWS::SageMaker::EndpointConfig")
    key = config["Properties"]["AsyncInferenceConfig"]["OutputConfig"]["KmsKeyId"]

    assert len(topics) == 2
    for topic_id, topic in topics.items():
        assert topic["Properties"]["KmsMasterKeyId"] == key
        (policy,) = [p for p in topic_policies if p["Properties"]["Topics"] == [{"Ref": topic_id}]]
        (deny,) = statements(policy["Properties"]["PolicyDocument"])
        assert (deny["Effect"], deny["Action"], deny["Principal"], deny["Condition"]) == (
            "Deny",
            "sns:Publish",
            "*",
            SSL_ONLY,
        )


def test_async_endpoint_waits_for_its_publish_permission(synth):
    endpoint = synth.stacks.modes["async"].endpoint
    policy_id = logical_id(endpoint.notification_policy)
    policy = synth.template("async")["Resources"][policy_id]
    _, cfn_endpoint = synth.only("async", "AWS::SageMaker::Endpoint")

    assert statements(policy["Properties"]["PolicyDocument"]) == [
        {
            "Action": "sns:Publish",
            "Effect": "Allow",
            "Resource": sorted(
                [{"Ref": logical_id(endpoint.success_topic)}, {"Ref": logical_id(endpoint.error_topic)}],
                key=json.dumps,
            ),
        }
    ]
    assert "<Detectron2-Shared:PublishOutputRefExecutionRole" in flatten(policy["Properties"]["Roles"][0])
    assert policy_id in cfn_endpoint["DependsOn"]


def test_async_scalable_target_reaches_zero(synth):
    target, _, _ = scaling(synth, "async")

    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 2)


def test_async_tracks_backlog_per_instance_on_the_endpoint_name_dimension_only(synth):
    _, policies, endpoint_name = scaling(synth, "async")

    assert policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"] == {
        "CustomizedMetricSpecification": {
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
            "MetricName": "ApproximateBacklogSizePerInstance",
            "Namespace": "AWS/SageMaker",
            "Statistic": "Average",
        },
        "ScaleInCooldown": 300,
        "ScaleOutCooldown": 60,
        "TargetValue": 5,
    }


def test_async_steps_out_of_zero_on_the_has_backlog_without_capacity_alarm(synth):
    _, policies, endpoint_name = scaling(synth, "async")
    step_id = next(
        pid
        for pid, p in synth.resources("async", "AWS::ApplicationAutoScaling::ScalingPolicy").items()
        if p["Properties"]["PolicyType"] == "StepScaling"
    )
    (alarm,) = [
        a
        for a in synth.resources("async", "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "HasBacklogWithoutCapacity"
    ]

    assert policies["StepScaling"]["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ChangeInCapacity",
        # async.scaling.cold_start_seconds: no second instance while the first one is still starting.
        "Cooldown": 600,
        "MetricAggregationType": "Average",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
    }
    properties = alarm["Properties"]
    assert {k: properties[k] for k in ("MetricName", "Namespace", "Dimensions", "Period", "Statistic")} == {
        "MetricName": "HasBacklogWithoutCapacity",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
        "Period": 60,
        "Statistic": "Average",
    }
    assert (properties["ComparisonOperator"], properties["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert (properties["EvaluationPeriods"], properties["DatapointsToAlarm"]) == (1, 1)
    assert properties["TreatMissingData"] == "notBreaching"
    assert properties["AlarmActions"] == [{"Ref": step_id}]


# --- serverless ------------------------------------------------------------------------------


def test_serverless_variant_is_sized_by_memory_and_concurrency(synth):
    model_id, _ = synth.only("serverless", "AWS::SageMaker::Model")
    _, config = synth.only("serverless", "AWS::SageMaker::EndpointConfig")
    _, endpoint = synth.only("serverless", "AWS::SageMaker::Endpoint")

    assert config["Properties"]["ProductionVariants"] == [
        {
            "ModelName": {"Fn::GetAtt": [model_id, "ModelName"]},
            "ServerlessConfig": {"MaxConcurrency": 5, "MemorySizeInMB": 6144},
            "VariantName": "AllTraffic",
        }
    ]
    assert "RetainAllVariantProperties" not in endpoint["Properties"]
    assert not synth.resources("serverless", "AWS::ApplicationAutoScaling::ScalableTarget")


def test_serverless_provisioned_concurrency_tracks_its_utilization(prod_synth):
    _, config = prod_synth.only("serverless", "AWS::SageMaker::EndpointConfig")
    target, policies, _ = scaling(prod_synth, "serverless")

    assert config["Properties"]["ProductionVariants"][0]["ServerlessConfig"] == {
        "MaxConcurrency": 20,
        "MemorySizeInMB": 6144,
        "ProvisionedConcurrency": 2,
    }
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredProvisionedConcurrency"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 10)
    assert policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"] == {
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantProvisionedConcurrencyUtilization"
        },
        "TargetValue": 0.7,
    }


# --- batch: see test_batch_pipeline.py ----------------------------------------------------


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_gpu_variants_run_on_an_ami_whose_driver_runs_the_cuda_13_image(synth, mode):
    _, config = synth.only(mode, "AWS::SageMaker::EndpointConfig")

    (variant,) = config["Properties"]["ProductionVariants"]
    # NVIDIA driver 580: CUDA 13 without the forward-compatibility libraries.
    assert variant["InferenceAmiVersion"] == "al2023-ami-sagemaker-inference-gpu-4-1"


@pytest.mark.parametrize("key", ["realtime", "async", "serverless"])
def test_the_role_sagemaker_deploys_with_may_read_exactly_the_rollback_alarms(synth, prod_synth, key):
    """SageMaker's auto-rollback reads the alarms with the endpoint's execution role: without
    cloudwatch:DescribeAlarms on them, no deployment could roll back."""
    for built in (synth, prod_synth):
        _, endpoint = built.only(key, "AWS::SageMaker::Endpoint")
        _, model = built.only(key, "AWS::SageMaker::Model")
        alarms = endpoint["Properties"]["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
        readers = [
            (policy_id, policy["Properties"])
            for policy_id, policy in built.resources(key, "AWS::IAM::Policy").items()
            if any(
                "cloudwatch:DescribeAlarms" in as_list(statement["Action"])
                for statement in statements(policy["Properties"]["PolicyDocument"])
            )
        ]

        assert len(alarms) == 3
        ((policy_id, policy),) = readers
        assert statements(policy["PolicyDocument"]) == [
            {
                "Action": "cloudwatch:DescribeAlarms",
                "Effect": "Allow",
                "Resource": [{"Fn::GetAtt": [alarm["AlarmName"]["Ref"], "Arn"]} for alarm in alarms],
            }
        ]
        # The model's execution role (from the shared stack), by name.
        (role,) = policy["Roles"]
        assert "ExecutionRole" in flatten(role) and "ExecutionRole" in flatten(
            model["Properties"]["ExecutionRoleArn"]
        )
        assert policy_id in endpoint["DependsOn"]
