"""One stack per inference mode; each depends on the shared stack only.

`cdk deploy <prefix>-Realtime` therefore deploys the shared stack (if needed) and that mode alone.
"""

from dataclasses import dataclass

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns

import d2sm_contract as contract
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
from sagemaker_constructs.endpoint import InferenceEndpoint
from sagemaker_constructs.instance_types import is_gpu
from sagemaker_constructs.packaged_model import InferenceMode
from sagemaker_constructs.settings import (
    EAGER_CPU_RUNTIME,
    AsyncConfig,
    BatchConfig,
    CpuRuntimeConfig,
    InstanceModeConfig,
    ModelVersion,
    MonitoringConfig,
    RealtimeConfig,
    ServerlessConfig,
)


@dataclass(frozen=True, kw_only=True)
class ModeStackProps:
    """What every mode stack takes from the shared stack, and the app's monitoring settings.

    `store` holds async requests and results, batch inputs and outputs and data capture;
    `monitoring` and `alarm_topic` alarm the endpoints (the batch pipeline has its own alarm)."""

    registry: ModelRegistry
    role: iam.IRole
    store: ArtifactStore
    monitoring: MonitoringConfig | None = None
    alarm_topic: sns.ITopic | None = None
    # What runs the networks of the CPU Models (model.cpu_runtime).
    cpu_runtime: CpuRuntimeConfig = EAGER_CPU_RUNTIME


class ModeStack(Stack):
    """Base of the four mode stacks: each is `(scope, construct_id, *, props, config)`, where
    `config` is that mode's configuration section."""

    def __init__(
        self, scope: Construct, construct_id: str, *, props: ModeStackProps, description: str
    ) -> None:
        super().__init__(scope, construct_id, description=description)
        self.props = props

    def packaged_model(
        self,
        construct_id: str,
        *,
        mode: InferenceMode,
        instance_type: str | None,
        version: ModelVersion,
    ) -> PackagedModel:
        """A Model of the registered `version` in this stack, run by the shared execution role."""
        return PackagedModel(
            self,
            construct_id,
            registry=self.props.registry,
            role=self.props.role,
            mode=mode,
            instance_type=instance_type,
            version=version,
            cpu_runtime=self.props.cpu_runtime,
        )

    def pool_models(
        self, config: InstanceModeConfig, model: PackagedModel, mode: InferenceMode
    ) -> list[PackagedModel]:
        """The Model for the pools whose type runs the other specification than `model` (the CPU
        Model of a GPU-then-CPU pool list, `CpuModel`), same version and mode; none without such pools."""
        other = [
            t for t in config.instance_types if ModelRegistry.specification_for(t) != model.specification
        ]
        if not other:
            return []
        construct_id = "GpuModel" if is_gpu(other[0]) else "CpuModel"
        return [
            self.packaged_model(construct_id, mode=mode, instance_type=other[0], version=config.model_version)
        ]


class EndpointStack(ModeStack):
    """A mode stack that serves through a SageMaker endpoint (real-time, async, serverless)."""

    endpoint: InferenceEndpoint


def output_instance_pools(stack: Stack, config: InstanceModeConfig) -> None:
    """`InstancePools`: the variant's types in priority order, for clients that show which of them
    the endpoint runs (DescribeEndpoint's ProductionVariants[].InstancePools counts per type)."""
    if config.instance_pools is not None:
        CfnOutput(
            stack,
            contract.INSTANCE_POOLS,
            value=",".join(config.instance_pools),
            description="Instance types of the variant, priority 1 first",
        )


def _output_endpoint_config_name(stack: Stack, endpoint: InferenceEndpoint) -> None:
    CfnOutput(
        stack,
        contract.ENDPOINT_CONFIG_NAME,
        value=endpoint.endpoint_config.attr_endpoint_config_name,
        description="The config this stack deployed; `d2sm verify` compares it with the endpoint's live one",
    )


class RealtimeStack(EndpointStack):
    endpoint: RealtimeEndpoint | InferenceComponentEndpoint

    def __init__(
        self, scope: Construct, construct_id: str, *, props: ModeStackProps, config: RealtimeConfig
    ) -> None:
        super().__init__(
            scope, construct_id, props=props, description="Detectron2 on SageMaker: real-time endpoint"
        )
        monitoring, alarm_topic = props.monitoring, props.alarm_topic
        if config.variants is not None or config.shadow is not None:
            # An experiment: every variant (the shadow too) deploys its own version on its own type.
            plans = [*config.production_variants(), *filter(None, [config.shadow_variant()])]
            models = {
                p.name: self.packaged_model(
                    f"{p.name}Model", mode="realtime", instance_type=p.instance_type, version=p.model_version
                )
                for p in plans
            }
            experiment = RealtimeEndpoint(
                self,
                "Realtime",
                config=config,
                models=models,
                store=props.store,
                monitoring=monitoring,
                alarm_topic=alarm_topic,
            )
            self.endpoint = experiment
            CfnOutput(self, contract.ENDPOINT_NAME, value=experiment.endpoint_name)
            _output_endpoint_config_name(self, experiment)
            CfnOutput(self, contract.VARIANT_NAMES, value=",".join(experiment.variant_names))
            if experiment.shadow_variant_name is not None:
                CfnOutput(self, contract.SHADOW_VARIANT_NAME, value=experiment.shadow_variant_name)
            return
        model = self.packaged_model(
            "Model", mode="realtime", instance_type=config.primary_instance_type, version=config.model_version
        )
        if config.inference_components is not None:
            component = InferenceComponentEndpoint(
                self,
                "InferenceComponent",
                model=model,
                config=config,
                role=props.role,
                monitoring=monitoring,
                alarm_topic=alarm_topic,
            )
            self.endpoint = component
            CfnOutput(
                self,
                contract.INFERENCE_COMPONENT_NAME,
                value=component.inference_component_name,
                description="Pass as InferenceComponentName to InvokeEndpoint",
            )
        else:
            pool_models = self.pool_models(config, model, "realtime")
            self.endpoint = RealtimeEndpoint(
                self,
                "Realtime",
                model=model,
                config=config,
                store=props.store,
                pool_models=pool_models,
                monitoring=monitoring,
                alarm_topic=alarm_topic,
            )
        CfnOutput(self, contract.ENDPOINT_NAME, value=self.endpoint.endpoint_name)
        _output_endpoint_config_name(self, self.endpoint)
        output_instance_pools(self, config)


class AsyncStack(EndpointStack):
    endpoint: AsyncEndpoint

    def __init__(
        self, scope: Construct, construct_id: str, *, props: ModeStackProps, config: AsyncConfig
    ) -> None:
        super().__init__(
            scope, construct_id, props=props, description="Detectron2 on SageMaker: async endpoint"
        )
        model = self.packaged_model(
            "Model", mode="async", instance_type=config.primary_instance_type, version=config.model_version
        )
        self.endpoint = AsyncEndpoint(
            self,
            "Async",
            model=model,
            config=config,
            store=props.store,
            role=props.role,
            monitoring=props.monitoring,
            alarm_topic=props.alarm_topic,
            pool_models=self.pool_models(config, model, "async"),
        )
        CfnOutput(self, contract.ENDPOINT_NAME, value=self.endpoint.endpoint_name)
        _output_endpoint_config_name(self, self.endpoint)
        output_instance_pools(self, config)
        CfnOutput(self, contract.ASYNC_INPUT_URI, value=self.endpoint.input_uri)
        CfnOutput(self, contract.ASYNC_OUTPUT_URI, value=self.endpoint.output_uri)
        CfnOutput(self, contract.ASYNC_FAILURE_URI, value=self.endpoint.failure_uri)
        CfnOutput(self, contract.ASYNC_SUCCESS_TOPIC_ARN, value=self.endpoint.success_topic.topic_arn)
        CfnOutput(self, contract.ASYNC_ERROR_TOPIC_ARN, value=self.endpoint.error_topic.topic_arn)


class ServerlessStack(EndpointStack):
    endpoint: ServerlessEndpoint

    def __init__(
        self, scope: Construct, construct_id: str, *, props: ModeStackProps, config: ServerlessConfig
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            props=props,
            description="Detectron2 on SageMaker: serverless endpoint (CPU image)",
        )
        model = self.packaged_model(
            "Model", mode="serverless", instance_type=None, version=config.model_version
        )
        self.endpoint = ServerlessEndpoint(
            self,
            "Serverless",
            model=model,
            config=config,
            monitoring=props.monitoring,
            alarm_topic=props.alarm_topic,
        )
        CfnOutput(self, contract.ENDPOINT_NAME, value=self.endpoint.endpoint_name)
        _output_endpoint_config_name(self, self.endpoint)


class BatchStack(ModeStack):
    """The batch Model and the pipeline that runs one transform job per submitted batch.

    Outputs follow the batch convention the client relies on: `JobNamePrefix`, `SubmitUri`,
    `InputUri`, `OutputUri`, `NotificationTopicArn`, `StateMachineArn`. The pipeline alarms on its
    own topic: `props.monitoring` and `props.alarm_topic` are not used here.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, props: ModeStackProps, config: BatchConfig
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            props=props,
            description="Detectron2 on SageMaker: batch transform model and pipeline",
        )
        model = self.packaged_model(
            "Model", mode="batch", instance_type=config.instance_type, version=config.model_version
        )
        # Stack names are letters, digits and hyphens: lowercased, a valid prefix for job names (whose
        # ARNs SageMaker lowercases).
        self.pipeline = BatchTransformPipeline(
            self,
            "Pipeline",
            model=model,
            config=config,
            store=props.store,
            job_name_prefix=f"{self.stack_name.lower()}-",
        )
        pipeline = self.pipeline
        CfnOutput(self, contract.BATCH_MODEL_NAME, value=model.model_name)
        CfnOutput(self, contract.BATCH_INSTANCE_TYPE, value=config.instance_type)
        if is_gpu(config.instance_type):
            CfnOutput(self, contract.BATCH_TRANSFORM_AMI_VERSION, value=config.transform_ami_version)
        CfnOutput(self, contract.BATCH_JOB_NAME_PREFIX, value=pipeline.job_name_prefix)
        CfnOutput(self, contract.BATCH_SUBMIT_URI, value=pipeline.submit_uri)
        CfnOutput(self, contract.BATCH_INPUT_URI, value=pipeline.input_uri)
        CfnOutput(self, contract.BATCH_OUTPUT_URI, value=pipeline.output_uri)
        CfnOutput(self, contract.BATCH_NOTIFICATION_TOPIC_ARN, value=pipeline.topic.topic_arn)
        CfnOutput(self, contract.BATCH_STATE_MACHINE_ARN, value=pipeline.state_machine.state_machine_arn)
