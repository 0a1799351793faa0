"""Batch transform."""

from __future__ import annotations

from typing import Literal

from .base import InstanceType, Section
from .versions import ModelVersion, ModelVersionField


class BatchConfig(Section):
    enabled: bool = True
    instance_type: InstanceType = "ml.g4dn.xlarge"
    # For the transform jobs' TransformAmiVersion on GPU instances (driver 535; see inference_ami_version).
    transform_ami_version: Literal["al2-ami-sagemaker-batch-gpu-535"] = "al2-ami-sagemaker-batch-gpu-535"
    model_version: ModelVersionField = ModelVersion()
