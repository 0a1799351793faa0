"""Batch transform: the jobs the event-driven pipeline starts, and how it watches and reports them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

import d2sm_contract as contract

from .base import EmailAddress, FieldProblems, InstanceType, Section, between
from .versions import ModelVersion, ModelVersionField

# SageMaker's own limit on MaxConcurrentTransforms x MaxPayloadInMB (and on MaxPayloadInMB alone).
MAX_TRANSFORM_PAYLOAD_MB = contract.MAX_TRANSFORM_PAYLOAD_MB


class BatchConfig(Section):
    enabled: bool = True
    instance_type: InstanceType = "ml.g4dn.xlarge"
    instance_count: Annotated[int, between(1, 100)] = 1
    # For the transform jobs' TransformAmiVersion on GPU instances (driver 535; see inference_ami_version).
    transform_ami_version: Literal["al2-ami-sagemaker-batch-gpu-535"] = "al2-ami-sagemaker-batch-gpu-535"
    model_version: ModelVersionField = ModelVersion()
    # One model copy per instance serialises inference: a second concurrent request only queues.
    max_concurrent_transforms: Annotated[int, between(1, MAX_TRANSFORM_PAYLOAD_MB)] = 1
    max_payload_mb: Annotated[int, between(1, MAX_TRANSFORM_PAYLOAD_MB)] = 6
    invocation_timeout_seconds: Annotated[int, between(1, 3600)] = 600
    invocation_max_retries: Annotated[int, between(0, 3)] = 3
    # First wait between two job status checks; each later wait doubles, up to MAX_POLL_INTERVAL_S.
    poll_interval_seconds: Annotated[int, between(1, 3600)] = 60
    # How long one submission's execution may wait for its job before it times out (and the alarm fires).
    timeout_hours: Annotated[int, between(1, 720)] = 48
    notification_email: EmailAddress | None = None

    @model_validator(mode="after")
    def _payload_budget(self) -> BatchConfig:
        budget = self.max_concurrent_transforms * self.max_payload_mb
        if budget > MAX_TRANSFORM_PAYLOAD_MB:
            raise FieldProblems(
                [
                    (
                        "max_payload_mb",
                        f"max_concurrent_transforms x max_payload_mb must be at most "
                        f"{MAX_TRANSFORM_PAYLOAD_MB} (got {self.max_concurrent_transforms} x "
                        f"{self.max_payload_mb} = {budget})",
                    )
                ]
            )
        return self
