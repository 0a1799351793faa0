"""Reusable constructs for serving a Detectron2 model on SageMaker (one construct per concern).

Lives in the plain folder `constructs/` (no __init__.py there) so it never shadows the `constructs`
library; the repository's pyproject.toml maps the package to that folder.
"""

from .async_endpoint import AsyncEndpoint
from .batch_pipeline import BatchTransformPipeline
from .execution_role import SageMakerExecutionRole
from .images import InferenceImages
from .inference_component import InferenceComponentEndpoint
from .model_data import ModelData
from .monitoring import AlarmTopic, EndpointAlarms, EndpointMetrics, InferenceDashboard
from .packaged_model import PackagedModel
from .realtime import RealtimeEndpoint
from .registry import ModelRegistry
from .serverless import ServerlessEndpoint
from .storage import ArtifactStore

__all__ = [
    "AlarmTopic",
    "ArtifactStore",
    "EndpointAlarms",
    "EndpointMetrics",
    "InferenceDashboard",
    "AsyncEndpoint",
    "BatchTransformPipeline",
    "InferenceComponentEndpoint",
    "InferenceImages",
    "ModelData",
    "ModelRegistry",
    "PackagedModel",
    "RealtimeEndpoint",
    "SageMakerExecutionRole",
    "ServerlessEndpoint",
]
