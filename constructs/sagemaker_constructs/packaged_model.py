"""A SageMaker Model deployed from the registered model package version."""

from typing import Literal

from aws_cdk import CfnDeletionPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker

from constructs import Construct
from d2sm_contract import INFERENCE_MODE_ENV

from .nag import skip_checkov
from .registry import ModelRegistry
from .settings import CURRENT_VERSION, EAGER_CPU_RUNTIME, CpuRuntimeConfig, ModelVersion

InferenceMode = Literal["realtime", "async", "serverless", "batch"]


class PackagedModel(Construct):
    """AWS::SageMaker::Model from the package version, with the container told its inference mode.

    `instance_type` picks the image: GPU families run the primary (GPU) specification, anything else
    (CPU types, or None for serverless) the `cpu` specification. The container derives its request
    size limits and timeouts from `INFERENCE_MODE`. Instance-based modes run network-isolated (the
    container needs no network; SageMaker itself fetches the model data); serverless endpoints do
    not support network isolation.

    `cpu_runtime` is what runs the networks of a CPU Model (`CPU_RUNTIME`, `CPU_PRECISION`); eager,
    the default, sets nothing, and GPU Models never get it.

    `version` picks the registered version: the current registration (default) or a pinned one
    (see `ModelRegistry.package_arn_for`); each variant of an endpoint may pick its own.

    A replaced Model is retained (`UpdateReplacePolicy: Retain`; a Model costs nothing): when SageMaker
    rolls a blue/green update back, the endpoint keeps running the previous config and Model, which
    CloudFormation's cleanup would otherwise delete. `d2sm verify` reports such a rollback; the first
    deploy guide (docs/first-deploy.md) says how to delete what is no longer in use.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        registry: ModelRegistry,
        role: iam.IRole,
        mode: InferenceMode,
        instance_type: str | None,
        version: ModelVersion = CURRENT_VERSION,
        cpu_runtime: CpuRuntimeConfig = EAGER_CPU_RUNTIME,
    ) -> None:
        super().__init__(scope, construct_id)
        self.mode = mode
        self.version = version
        self.role = role
        # None: the primary (GPU) specification; otherwise its name (`cpu`).
        self.specification = registry.specification_for(instance_type)
        environment: dict[str, str] = {INFERENCE_MODE_ENV: mode}
        if self.specification is not None:
            environment.update(cpu_runtime.environment())
        self.resource = sagemaker.CfnModel(
            self,
            "Resource",
            execution_role_arn=role.role_arn,
            enable_network_isolation=instance_type is not None,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                model_package_name=registry.package_arn_for(self, version),
                inference_specification_name=self.specification,
                environment=environment,
            ),
        )
        # Deleting the stack deletes it; replacing it keeps the old one (stated both ways, cfn-lint W3011).
        self.resource.cfn_options.deletion_policy = CfnDeletionPolicy.DELETE
        self.resource.cfn_options.update_replace_policy = CfnDeletionPolicy.RETAIN
        if instance_type is None:
            skip_checkov(
                self.resource,
                "CKV_AWS_370",
                "Serverless endpoints do not support network isolation (SageMaker refuses the model); "
                "every instance-based mode runs network-isolated.",
            )
        self.model_name = self.resource.attr_model_name
