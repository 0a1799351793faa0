"""Stack names and output keys the client reads: the one place they are spelled in the client.

The CDK app writes these outputs (stacks/shared.py, stacks/modes.py); the client never imports it,
so the names are repeated here once and every command reads them through these constants.
"""

from __future__ import annotations

# Stack suffixes: `<app name>-<suffix>`.
SHARED = "Shared"
REALTIME = "Realtime"
SERVERLESS = "Serverless"
ASYNC = "Async"
BATCH = "Batch"

# Output keys.
ENDPOINT_NAME = "EndpointName"
INFERENCE_COMPONENT_NAME = "InferenceComponentName"
VARIANT_NAMES = "VariantNames"
ARTIFACTS_BUCKET_NAME = "ArtifactsBucketName"
MODEL_PACKAGE_GROUP_NAME = "ModelPackageGroupName"
ASYNC_INPUT_URI = "InputUri"
BATCH_JOB_NAME_PREFIX = "JobNamePrefix"
BATCH_SUBMIT_URI = "SubmitUri"
BATCH_INPUT_URI = "InputUri"
BATCH_OUTPUT_URI = "OutputUri"
BATCH_MODEL_NAME = "ModelName"

# The modes a user names on the command line, and the stack each one lives in.
STACK_FOR_MODE = {"realtime": REALTIME, "serverless": SERVERLESS, "async": ASYNC, "batch": BATCH}
ENDPOINT_MODES = ("realtime", "serverless", "async")
