"""Traffic experiments on the real-time endpoint: weighted production variants (A/B) and a shadow
variant that receives a copy of production traffic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from .base import InstanceType, Section, between, matching
from .versions import ModelVersion, ModelVersionField

VARIANT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
VariantName = Annotated[str, matching(VARIANT_NAME, "1-63 letters, digits or inner hyphens")]
# The variant of an endpoint without experiments; stable so scaling and metrics keep pointing at it.
DEFAULT_VARIANT_NAME = "AllTraffic"
# SageMaker's limit of production variants per endpoint config.
MAX_PRODUCTION_VARIANTS = 10


class ShadowConfig(Section):
    """A shadow variant: SageMaker copies `sampling_percentage` % of production calls to it and
    discards its responses. Unset fields take the real-time section's value."""

    name: VariantName = "Shadow"
    sampling_percentage: Annotated[int, between(1, 100)] = 100
    model_version: ModelVersionField | None = None
    instance_type: InstanceType | None = None
    initial_instance_count: Annotated[int, between(1, 100)] = 1


@dataclass(frozen=True)
class VariantPlan:
    """What one variant of the endpoint config deploys, every default resolved."""

    name: str
    weight: float
    model_version: ModelVersion
    instance_type: str
    initial_instance_count: int
    scaling: Any | None  # RealtimeScaling (endpoints.py), never async's
