"""The names the CDK app and the `d2sm` client must spell alike, defined once.

Stack names, output keys, the artifacts bucket's layout, the batch summary object, the serving
container's environment variables the stacks set, and SageMaker's batch payload cap.

Why a module of its own, and why here: the client never imports the CDK app and the CDK app never
imports the client (each installs without the other's dependencies), so neither can own a name the
other reads. This package is the standard library only, imports nothing, and lives in the client's
source tree, so the client distribution ships it as it is (`pip install ./client` needs nothing
else); the CDK app's distribution maps the same folder (root pyproject.toml, `package-dir`), so both
sides read the one file. Renaming anything here renames it for both.

The serving container cannot import it: its image builds from `container/` alone. Its own settings
module names the variables it reads; tests/infra/test_container_contract.py checks that the
container reads every variable the synthesized stacks set, and the payload cap here against its own.
"""

from __future__ import annotations

from typing import Final

# ---- Stacks: `<app name>-<suffix>`; the app name is the configuration's `name` ("Detectron2").
DEFAULT_APP_NAME: Final = "Detectron2"
SHARED: Final = "Shared"
REALTIME: Final = "Realtime"
ASYNC: Final = "Async"
SERVERLESS: Final = "Serverless"
BATCH: Final = "Batch"

# The inference modes, as the client's commands, the configuration sections and the container's
# INFERENCE_MODE name them, and the stack each one lives in (in the order the client lists them).
STACK_FOR_MODE: Final = {"realtime": REALTIME, "serverless": SERVERLESS, "async": ASYNC, "batch": BATCH}
MODES: Final = tuple(STACK_FOR_MODE)
ENDPOINT_MODES: Final = ("realtime", "serverless", "async")


def stack_name(app_name: str, suffix: str) -> str:
    return f"{app_name}-{suffix}"


# ---- Stack outputs (CfnOutput ids; CloudFormation's OutputKey).
# Shared stack.
ARTIFACTS_BUCKET_NAME: Final = "ArtifactsBucketName"
MODEL_PACKAGE_GROUP_NAME: Final = "ModelPackageGroupName"
MODEL_PACKAGE_ARN: Final = "ModelPackageArn"
ALARM_TOPIC_ARN: Final = "AlarmTopicArn"
DASHBOARD_NAME: Final = "DashboardName"
# Endpoint stacks (real-time, async, serverless).
ENDPOINT_NAME: Final = "EndpointName"
ENDPOINT_CONFIG_NAME: Final = "EndpointConfigName"
INSTANCE_POOLS: Final = "InstancePools"
# Real-time: an inference-component endpoint, or an experiment's variants.
INFERENCE_COMPONENT_NAME: Final = "InferenceComponentName"
VARIANT_NAMES: Final = "VariantNames"
SHADOW_VARIANT_NAME: Final = "ShadowVariantName"
# Async.
ASYNC_INPUT_URI: Final = "InputUri"
ASYNC_OUTPUT_URI: Final = "OutputUri"
ASYNC_FAILURE_URI: Final = "FailureUri"
ASYNC_SUCCESS_TOPIC_ARN: Final = "SuccessTopicArn"
ASYNC_ERROR_TOPIC_ARN: Final = "ErrorTopicArn"
# Batch.
BATCH_MODEL_NAME: Final = "ModelName"
BATCH_INSTANCE_TYPE: Final = "InstanceType"
BATCH_TRANSFORM_AMI_VERSION: Final = "TransformAmiVersion"
BATCH_JOB_NAME_PREFIX: Final = "JobNamePrefix"
BATCH_SUBMIT_URI: Final = "SubmitUri"
BATCH_INPUT_URI: Final = "InputUri"
BATCH_OUTPUT_URI: Final = "OutputUri"
BATCH_NOTIFICATION_TOPIC_ARN: Final = "NotificationTopicArn"
BATCH_STATE_MACHINE_ARN: Final = "StateMachineArn"

# ---- The artifacts bucket's layout (key prefixes, no trailing slash).
ASYNC_INPUT_PREFIX: Final = "async/input"
ASYNC_OUTPUT_PREFIX: Final = "async/output"
ASYNC_FAILURE_PREFIX: Final = "async/failure"
BATCH_INPUT_PREFIX: Final = "batch/input"
# A batch is submitted by writing batch/submit/<batch-id> last; outside the input prefix, a marker
# is never sent to the model as a record.
BATCH_SUBMIT_PREFIX: Final = "batch/submit"
BATCH_OUTPUT_PREFIX: Final = "batch/output"
# Model versions registered outside the app (`d2sm register` uploads them here), so a version pinned
# in the configuration can be deployed: the execution role reads this prefix.
MODELS_PREFIX: Final = "models"
REALTIME_CAPTURE_PREFIX: Final = "capture/realtime"
ASYNC_CAPTURE_PREFIX: Final = "capture/async"
# The batch pipeline writes this object under batch/output/<batch-id>/ when a batch ends.
BATCH_SUMMARY_OBJECT: Final = "_summary.json"

# ---- The serving container's environment, as the stacks (and `d2sm serve`) set it.
INFERENCE_MODE_ENV: Final = "INFERENCE_MODE"
BATCH_RECORD_ERRORS_ENV: Final = "BATCH_RECORD_ERRORS"
# An image the container cannot read becomes an error object in its `.out` file instead of failing
# the whole transform job.
BATCH_RECORD_ERRORS_AS_OBJECTS: Final = "object"
REQUEST_TIMEOUT_ENV: Final = "REQUEST_TIMEOUT_S"
# `d2sm serve` asks for plain log lines in a terminal; the image's default is one JSON object a line.
LOG_FORMAT_ENV: Final = "LOG_FORMAT"
LOG_FORMAT_TEXT: Final = "text"
# What runs the model's networks on a CPU copy, and at which precision (model.cpu_runtime).
CPU_RUNTIME_ENV: Final = "CPU_RUNTIME"
CPU_PRECISION_ENV: Final = "CPU_PRECISION"
# The member of model.tar.gz that a packaged OpenVINO conversion has (the container's artifact layout):
# without it, every new CPU instance with CPU_RUNTIME=openvino converts at its start.
ARTIFACT_OPENVINO_MANIFEST: Final = "openvino/manifest.json"

# ---- Limits.
# SageMaker batch transform's hard maximum for MaxPayloadInMB (and for MaxConcurrentTransforms x
# MaxPayloadInMB); the container caps SAGEMAKER_MAX_PAYLOAD_IN_MB at the same value.
MAX_TRANSFORM_PAYLOAD_MB: Final = 100
