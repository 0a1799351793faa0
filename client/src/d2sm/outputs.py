"""Stack names and output keys the client reads, from the contract it shares with the CDK app.

The CDK app writes these outputs (stacks/shared.py, stacks/modes.py) with the same constants
(`d2sm_contract`); the client never imports the app. Every command reads them through this module.
"""

from __future__ import annotations

from d2sm_contract import (
    ARTIFACTS_BUCKET_NAME,
    ASYNC,
    ASYNC_INPUT_URI,
    BATCH,
    BATCH_INPUT_URI,
    BATCH_JOB_NAME_PREFIX,
    BATCH_MODEL_NAME,
    BATCH_OUTPUT_URI,
    BATCH_SUBMIT_URI,
    ENDPOINT_MODES,
    ENDPOINT_NAME,
    INFERENCE_COMPONENT_NAME,
    MODEL_PACKAGE_GROUP_NAME,
    REALTIME,
    SERVERLESS,
    SHARED,
    STACK_FOR_MODE,
    VARIANT_NAMES,
)

__all__ = [
    "ARTIFACTS_BUCKET_NAME",
    "ASYNC",
    "ASYNC_INPUT_URI",
    "BATCH",
    "BATCH_INPUT_URI",
    "BATCH_JOB_NAME_PREFIX",
    "BATCH_MODEL_NAME",
    "BATCH_OUTPUT_URI",
    "BATCH_SUBMIT_URI",
    "ENDPOINT_MODES",
    "ENDPOINT_NAME",
    "INFERENCE_COMPONENT_NAME",
    "MODEL_PACKAGE_GROUP_NAME",
    "REALTIME",
    "SERVERLESS",
    "SHARED",
    "STACK_FOR_MODE",
    "VARIANT_NAMES",
]
