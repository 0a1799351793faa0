"""What every SageMaker endpoint construct shares: one variant, config + endpoint, invoke grant."""

from collections.abc import Sequence
from typing import TypeVar

from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from .instance_types import is_gpu
from .packaged_model import PackagedModel
from .scaling import ScalableVariantAttribute

ScalableT = TypeVar("ScalableT", bound=ScalableVariantAttribute)

from .settings.experiments import DEFAULT_VARIANT_NAME as VARIANT_NAME


def instance_variant(
    model: PackagedModel,
    *,
    instance_type: str,
    initial_instance_count: int,
    inference_ami_version: str,
    variant_name: str = VARIANT_NAME,
    weight: float = 1,
) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
    return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
        variant_name=variant_name,
        model_name=model.model_name,
        instance_type=instance_type,
        initial_instance_count=initial_instance_count,
        initial_variant_weight=weight,
        # The GPU image needs a newer NVIDIA driver than the default AMI's; CPU variants take the default.
        inference_ami_version=inference_ami_version if is_gpu(instance_type) else None,
    )


class InferenceEndpoint(Construct):
    """Base: subclasses build their variant, then call `_create_endpoint`.

    Neither the endpoint config nor the endpoint gets a physical name: configs are immutable, so
    every change replaces the config, which CloudFormation can only do under a generated name.
    No volume KmsKeyId: the GPU instances' NVMe instance storage rejects it (AWS encrypts it).
    """

    variant_name = VARIANT_NAME

    def _create_endpoint(
        self,
        variants: Sequence[sagemaker.CfnEndpointConfig.ProductionVariantProperty],
        *,
        autoscaled: bool,
        async_inference_config: sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty | None = None,
        data_capture_config: sagemaker.CfnEndpointConfig.DataCaptureConfigProperty | None = None,
        shadow_variants: Sequence[sagemaker.CfnEndpointConfig.ProductionVariantProperty] = (),
        execution_role_arn: str | None = None,
        apply_on_update: Sequence[str] = (),
    ) -> None:
        """`apply_on_update`: variant properties (`DesiredWeight`, `DataCaptureConfig`) an update
        takes from the new config even though `autoscaled` retains the others (the instance count)."""
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=list(variants),
            shadow_production_variants=list(shadow_variants) or None,
            async_inference_config=async_inference_config,
            data_capture_config=data_capture_config,
            execution_role_arn=execution_role_arn,
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            # An update would otherwise reset an autoscaled instance count to the initial count.
            retain_all_variant_properties=True if autoscaled else None,
            exclude_retained_variant_properties=[
                sagemaker.CfnEndpoint.VariantPropertyProperty(variant_property_type=name)
                for name in apply_on_update
            ]
            if autoscaled and apply_on_update
            else None,
        )
        self.endpoint_name = self.endpoint.attr_endpoint_name
        self.endpoint_arn = self.endpoint.ref

    def _auto_scale(
        self,
        attribute: type[ScalableT],
        construct_id: str,
        *,
        min_capacity: int,
        max_capacity: int,
        variant_name: str | None = None,
    ) -> ScalableT:
        return attribute(
            self,
            construct_id,
            endpoint_name=self.endpoint_name,
            variant_name=variant_name or self.variant_name,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
        )

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=[self.endpoint_arn]
        )
