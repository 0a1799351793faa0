"""The model registry: a model package group and the registered version every mode deploys."""

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_ssm as ssm

from constructs import Construct, IConstruct

from .images import InferenceImages
from .instance_types import is_gpu
from .model_data import ModelData
from .settings import CURRENT_VERSION, ModelVersion

# What the container's decoders and encoder accept (container/inference_server owns the list).
SUPPORTED_CONTENT_TYPES = [
    "image/jpeg",
    "image/png",
    "application/x-image",
    "application/x-npy",
    "application/json",
]
SUPPORTED_RESPONSE_MIME_TYPES = ["application/json"]


class ModelRegistry(Construct):
    """Model package group + one version: GPU image as primary specification, CPU image as `cpu`.

    `description` describes the version; `group_description` the group. The group's is create-only
    on a fixed-name, retained resource, which CloudFormation cannot replace: it never follows the
    version's.

    A new image or model replaces the version (`InferenceSpecification` is create-only): the group
    gains the next version number. Every version, and the group, is retained, on replacement and on
    stack deletion, so the group keeps its history (1, 2, 3, …) and any approved version can be
    deployed by pinning it. Other stacks read the current version's ARN from an SSM parameter that
    CloudFormation resolves at every deploy (and the CDK CLI never skips a stack with such a
    parameter) instead of a stack export, which cannot change while in use.
    """

    CPU_SPECIFICATION = "cpu"

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        group_name: str,
        description: str,
        group_description: str,
        approval_status: str,
        images: InferenceImages,
        model_data: ModelData,
        package_arn_parameter_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.group_name = group_name
        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=group_name,
            model_package_group_description=group_description,
        )

        def containers(
            image_uri: str,
        ) -> list[sagemaker.CfnModelPackage.ModelPackageContainerDefinitionProperty]:
            return [
                sagemaker.CfnModelPackage.ModelPackageContainerDefinitionProperty(
                    image=image_uri, model_data_url=model_data.s3_url
                )
            ]

        self.package = sagemaker.CfnModelPackage(
            self,
            "Package",
            model_package_group_name=group_name,
            model_package_description=description,
            model_approval_status=approval_status,
            inference_specification=sagemaker.CfnModelPackage.InferenceSpecificationProperty(
                containers=containers(images.gpu.image_uri),
                supported_content_types=SUPPORTED_CONTENT_TYPES,
                supported_response_mime_types=SUPPORTED_RESPONSE_MIME_TYPES,
            ),
            additional_inference_specifications=[
                sagemaker.CfnModelPackage.AdditionalInferenceSpecificationDefinitionProperty(
                    name=self.CPU_SPECIFICATION,
                    description="CPU build of the same container: serverless and CPU instance types",
                    containers=containers(images.cpu.image_uri),
                    supported_content_types=SUPPORTED_CONTENT_TYPES,
                    supported_response_mime_types=SUPPORTED_RESPONSE_MIME_TYPES,
                )
            ],
        )
        self.package.add_resource_dependency(self.group)
        # RETAIN sets both DeletionPolicy and UpdateReplacePolicy: a replaced version stays registered.
        # The group holds the versions, and SageMaker cannot delete a group that still has some.
        for resource in (self.group, self.package):
            resource.apply_removal_policy(RemovalPolicy.RETAIN)
        self.package_arn = self.package.attr_model_package_arn
        self.package_arn_parameter_name = package_arn_parameter_name
        ssm.StringParameter(
            self,
            "PackageArn",
            parameter_name=package_arn_parameter_name,
            string_value=self.package_arn,
            description="Model package version that the Detectron2 inference stacks deploy",
        )

    def package_arn_for(self, scope: Construct, version: ModelVersion = CURRENT_VERSION) -> str:
        """The ARN of `version` as a Model in `scope`'s stack names it.

        The current registration comes from this construct (through SSM when `scope` is in another
        stack, so the ARN is resolved at deploy time). A pinned version is a literal in `scope`'s
        template (`.../model-package/<group>/<number>`), so `cdk diff` shows a change of pin.
        """
        if version.arn is not None:
            return version.arn
        if version.number is not None:
            return self.version_arn(scope, version.number)
        if Stack.of(scope) is Stack.of(self):
            return self.package_arn
        return ssm.StringParameter.value_for_string_parameter(scope, self.package_arn_parameter_name)

    def version_arn(self, scope: IConstruct, number: int) -> str:
        """ARN of version `number` of this group, in `scope`'s partition, region and account."""
        return Stack.of(scope).format_arn(
            service="sagemaker",
            resource="model-package",
            # SageMaker writes the names in its ARNs in lower case.
            resource_name=f"{self.group_name.lower()}/{number}",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )

    @classmethod
    def specification_for(cls, instance_type: str | None) -> str | None:
        """Which specification an instance runs: None (primary, GPU) or `cpu` (no instance: serverless)."""
        if instance_type is not None and is_gpu(instance_type):
            return None
        return cls.CPU_SPECIFICATION
