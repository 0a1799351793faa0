"""One stack per inference mode; each depends on the shared stack only.

`cdk deploy <prefix>-Realtime` therefore deploys the shared stack (if needed) and that mode alone.
"""

from collections.abc import Callable

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns

from constructs import Construct
from sagemaker_constructs import (
    ArtifactStore,
    AsyncEndpoint,
    BatchTransformPipeline,
    InferenceComponentEndpoint,
    ModelRegistry,
    PackagedModel,
    RealtimeEndpoint,
    ServerlessEndpoint,
)
from sagemaker_constructs.instance_types import is_gpu
from sagemaker_constructs.settings import (
    AsyncConfig,
    BatchConfig,
    InstanceModeConfig,
    ModelVersion,
    MonitoringConfig,
    RealtimeConfig,
    ServerlessConfig,
)

ModelFactory = Callable[[str, str, ModelVersion], PackagedModel]


def pool_models_for(
    config: InstanceModeConfig, model: PackagedModel, model_for: ModelFactory
) -> list[PackagedModel]:
    """The Model for the pools whose type runs the other specification than `model` (the CPU
    Model of a GPU-then-CPU pool list, `CpuModel`), same version and mode; none without such pools."""
    other = [t for t in config.instance_types if ModelRegistry.specification_for(t) != model.specification]
    if not other:
        return []
    construct_id = "GpuModel" if is_gpu(other[0]) else "CpuModel"
    return [model_for(construct_id, other[0], config.model_version)]


def output_instance_pools(stack: Stack, config: InstanceModeConfig) -> None:
    """`InstancePools`: the variant's types in priority order, for clients that show which of them
    the endpoint runs (DescribeEndpoint's ProductionVariants[].InstancePools counts per type)."""
    if config.instance_pools is not None:
        CfnOutput(
            stack,
            "InstancePools",
            value=",".join(config.instance_pools),
            description="Instance types of the variant, priority 1 first",
        )


def _output_endpoint_config_name(stack: Stack, endpoint) -> None:
    CfnOutput(
        stack,
        "EndpointConfigName",
        value=endpoint.endpoint_config.attr_endpoint_config_name,
        description="The config this stack deployed; `d2sm verify` compares it with the endpoint's live one",
    )


class RealtimeStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        registry: ModelRegistry,
        role: iam.IRole,
        store: ArtifactStore,
        config: RealtimeConfig,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id, description="Detectron2 on SageMaker: real-time endpoint")
        monitored = {"monitoring": monitoring, "alarm_topic": alarm_topic}

        def model_for(construct_id: str, instance_type: str, version: ModelVersion) -> PackagedModel:
            return PackagedModel(
                self,
                construct_id,
                registry=registry,
                role=role,
                mode="realtime",
                instance_type=instance_type,
                version=version,
            )

        self.endpoint: RealtimeEndpoint | InferenceComponentEndpoint
        if config.variants is not None or config.shadow is not None:
            # An experiment: every variant (the shadow too) deploys its own version on its own type.
            plans = [*config.production_variants(), *filter(None, [config.shadow_variant()])]
            models = {p.name: model_for(f"{p.name}Model", p.instance_type, p.model_version) for p in plans}
            self.endpoint = RealtimeEndpoint(
                self, "Realtime", config=config, models=models, store=store, **monitored
            )
            CfnOutput(self, "EndpointName", value=self.endpoint.endpoint_name)
            _output_endpoint_config_name(self, self.endpoint)
            CfnOutput(self, "VariantNames", value=",".join(self.endpoint.variant_names))
            if self.endpoint.shadow_variant_name is not None:
                CfnOutput(self, "ShadowVariantName", value=self.endpoint.shadow_variant_name)
            return
        model = model_for("Model", config.primary_instance_type, config.model_version)
        if config.inference_components is not None:
            self.endpoint = InferenceComponentEndpoint(
                self, "InferenceComponent", model=model, config=config, role=role, **monitored
            )
            CfnOutput(
                self,
                "InferenceComponentName",
                value=self.endpoint.inference_component_name,
                description="Pass as InferenceComponentName to InvokeEndpoint",
            )
        else:
            pool_models = pool_models_for(config, model, model_for)
            self.endpoint = RealtimeEndpoint(
                self,
                "Realtime",
                model=model,
                config=config,
                store=store,
                pool_models=pool_models,
                **monitored,
            )
        CfnOutput(self, "EndpointName", value=self.endpoint.endpoint_name)
        _output_endpoint_config_name(self, self.endpoint)
        output_instance_pools(self, config)


class AsyncStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        registry: ModelRegistry,
        role: iam.IRole,
        store: ArtifactStore,
        config: AsyncConfig,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id, description="Detectron2 on SageMaker: async endpoint")

        def model_for(construct_id: str, instance_type: str, version: ModelVersion) -> PackagedModel:
            return PackagedModel(
                self,
                construct_id,
                registry=registry,
                role=role,
                mode="async",
                instance_type=instance_type,
                version=version,
            )

        model = model_for("Model", config.primary_instance_type, config.model_version)
        self.endpoint = AsyncEndpoint(
            self,
            "Async",
            model=model,
            config=config,
            store=store,
            role=role,
            monitoring=monitoring,
            alarm_topic=alarm_topic,
            pool_models=pool_models_for(config, model, model_for),
        )
        CfnOutput(self, "EndpointName", value=self.endpoint.endpoint_name)
        _output_endpoint_config_name(self, self.endpoint)
        output_instance_pools(self, config)
        CfnOutput(self, "InputUri", value=self.endpoint.input_uri)
        CfnOutput(self, "OutputUri", value=self.endpoint.output_uri)
        CfnOutput(self, "FailureUri", value=self.endpoint.failure_uri)
        CfnOutput(self, "SuccessTopicArn", value=self.endpoint.success_topic.topic_arn)
        CfnOutput(self, "ErrorTopicArn", value=self.endpoint.error_topic.topic_arn)


class ServerlessStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        registry: ModelRegistry,
        role: iam.IRole,
        config: ServerlessConfig,
        monitoring: MonitoringConfig | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(
            scope, construct_id, description="Detectron2 on SageMaker: serverless endpoint (CPU image)"
        )
        model = PackagedModel(
            self,
            "Model",
            registry=registry,
            role=role,
            mode="serverless",
            instance_type=None,
            version=config.model_version,
        )
        self.endpoint = ServerlessEndpoint(
            self, "Serverless", model=model, config=config, monitoring=monitoring, alarm_topic=alarm_topic
        )
        CfnOutput(self, "EndpointName", value=self.endpoint.endpoint_name)
        _output_endpoint_config_name(self, self.endpoint)


class BatchStack(Stack):
    """The batch Model and the pipeline that runs one transform job per submitted batch.

    Outputs follow the batch convention the client relies on: `JobNamePrefix`, `SubmitUri`,
    `InputUri`, `OutputUri`, `NotificationTopicArn`, `StateMachineArn`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        registry: ModelRegistry,
        role: iam.IRole,
        store: ArtifactStore,
        config: BatchConfig,
    ) -> None:
        super().__init__(
            scope, construct_id, description="Detectron2 on SageMaker: batch transform model and pipeline"
        )
        model = PackagedModel(
            self,
            "Model",
            registry=registry,
            role=role,
            mode="batch",
            instance_type=config.instance_type,
            version=config.model_version,
        )
        # Stack names are letters, digits and hyphens: lowercased, a valid prefix for job names (whose
        # ARNs SageMaker lowercases).
        self.pipeline = BatchTransformPipeline(
            self,
            "Pipeline",
            model=model,
            config=config,
            store=store,
            job_name_prefix=f"{self.stack_name.lower()}-",
        )
        pipeline = self.pipeline
        CfnOutput(self, "ModelName", value=model.model_name)
        CfnOutput(self, "InstanceType", value=config.instance_type)
        if is_gpu(config.instance_type):
            CfnOutput(self, "TransformAmiVersion", value=config.transform_ami_version)
        CfnOutput(self, "JobNamePrefix", value=pipeline.job_name_prefix)
        CfnOutput(self, "SubmitUri", value=pipeline.submit_uri)
        CfnOutput(self, "InputUri", value=pipeline.input_uri)
        CfnOutput(self, "OutputUri", value=pipeline.output_uri)
        CfnOutput(self, "NotificationTopicArn", value=pipeline.topic.topic_arn)
        CfnOutput(self, "StateMachineArn", value=pipeline.state_machine.state_machine_arn)
