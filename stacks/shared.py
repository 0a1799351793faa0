"""Everything the inference modes share: storage, images, model data, registry, execution role."""

from pathlib import Path

from aws_cdk import Annotations, CfnOutput, Stack

import d2sm_contract as contract
from constructs import Construct
from sagemaker_constructs import (
    AlarmTopic,
    ArtifactStore,
    InferenceDashboard,
    InferenceImages,
    ModelData,
    ModelRegistry,
    SageMakerExecutionRole,
)
from sagemaker_constructs.batch_pipeline import log_group_patterns
from sagemaker_constructs.settings import AppConfig

# The warning synth gives for a local model.data without the conversion model.cpu_runtime wants.
UNPACKAGED_CPU_RUNTIME = "d2sm:unpackagedCpuRuntime"


class SharedModelStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: AppConfig, container_dir: Path
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=(
                "Detectron2 on SageMaker: artifacts, inference images, model registry, execution role"
            ),
        )
        self.store = ArtifactStore(self, "Artifacts")
        images = InferenceImages(self, "Images", directory=container_dir)
        model_data = ModelData(self, "ModelData", location=config.model.data)
        if (
            config.model.cpu_runtime.runtime == "openvino"
            and model_data.holds(contract.ARTIFACT_OPENVINO_MANIFEST) is False
        ):
            Annotations.of(model_data).add_warning_v2(
                UNPACKAGED_CPU_RUNTIME,
                f"model.data has no {contract.ARTIFACT_OPENVINO_MANIFEST}: with model.cpu_runtime "
                "openvino, every new CPU instance converts the networks at its start, which makes its "
                "cold start about 1.5-2x longer; repackage with `python -m inference_server.package "
                "... --cpu-runtime openvino`",
            )
        store = self.store
        read_prefixes, write_prefixes = [store.MODELS_PREFIX], []
        if config.async_.enabled:
            read_prefixes.append(store.ASYNC_INPUT_PREFIX)
            write_prefixes += [store.ASYNC_OUTPUT_PREFIX, store.ASYNC_FAILURE_PREFIX]
            expiry = config.async_.expire_after_days
            for prefix, days in (
                (store.ASYNC_INPUT_PREFIX, expiry.input),
                (store.ASYNC_OUTPUT_PREFIX, expiry.output),
                (store.ASYNC_FAILURE_PREFIX, expiry.failure),
            ):
                if days is not None:
                    store.expire_objects_under(prefix, days)
        if config.batch.enabled:
            read_prefixes.append(store.BATCH_INPUT_PREFIX)
            write_prefixes.append(store.BATCH_OUTPUT_PREFIX)
            # The batch stack's rule starts a transform job when a submission marker is written.
            store.send_events_to_event_bridge()
            store.let_alarms_notify_through_key()
            # The batch stack's log groups are encrypted with the key.
            store.let_logs_encrypt_with_key(log_group_patterns(config.name))
        for mode, prefix in (
            (config.realtime, store.REALTIME_CAPTURE_PREFIX),
            (config.async_, store.ASYNC_CAPTURE_PREFIX),
        ):
            # SageMaker writes data capture with the endpoint's execution role; the role may read
            # it back too (a monitoring or labelling job run under it).
            if mode.enabled and mode.data_capture is not None:
                read_prefixes.append(prefix)
                write_prefixes.append(prefix)
                store.expire_objects_under(prefix, mode.data_capture.expiry_days)
        self.execution_role = SageMakerExecutionRole(
            self,
            "ExecutionRole",
            store=store,
            read_prefixes=read_prefixes,
            write_prefixes=write_prefixes,
            images=images,
            model_data=model_data,
        ).role
        self.images = images
        self.registry = ModelRegistry(
            self,
            "Registry",
            group_name=config.package_group_name,
            description=config.model.description,
            group_description=config.model.package_group_description,
            approval_status=config.model.approval_status,
            images=images,
            model_data=model_data,
            package_arn_parameter_name=f"/{config.name}/model-package-arn",
        )
        # One topic for every mode's alarms, one dashboard for every mode (build_stacks adds them).
        self.alarm_topic: AlarmTopic | None = None
        self.dashboard: InferenceDashboard | None = None
        if config.monitoring.enabled:
            self.alarm_topic = AlarmTopic(self, "Alarms", store=store, email=config.monitoring.email)
            self.dashboard = InferenceDashboard(self, "Dashboard")
            CfnOutput(self, contract.ALARM_TOPIC_ARN, value=self.alarm_topic.topic.topic_arn)
            CfnOutput(self, contract.DASHBOARD_NAME, value=self.dashboard.dashboard.dashboard_name)
        CfnOutput(self, contract.ARTIFACTS_BUCKET_NAME, value=self.store.bucket.bucket_name)
        CfnOutput(self, contract.MODEL_PACKAGE_GROUP_NAME, value=config.package_group_name)
        CfnOutput(self, contract.MODEL_PACKAGE_ARN, value=self.registry.package_arn)
