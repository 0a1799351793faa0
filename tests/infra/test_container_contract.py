"""Where the infrastructure and the container must agree (each side owns its half)."""

import re
from typing import get_args

from inference_server.content_types import JSON
from inference_server.decoding import DECODERS
from inference_server.settings import InferenceMode
from sagemaker_constructs.images import InferenceImages
from sagemaker_constructs.packaged_model import InferenceMode as DeployedMode
from sagemaker_constructs.registry import SUPPORTED_CONTENT_TYPES, SUPPORTED_RESPONSE_MIME_TYPES

from .conftest import REPO_ROOT


def test_every_inference_mode_the_stacks_set_is_one_the_container_reads():
    assert set(get_args(DeployedMode)) == {mode.value for mode in InferenceMode}


def test_the_model_package_advertises_exactly_the_content_types_the_container_decodes():
    assert list(DECODERS) == SUPPORTED_CONTENT_TYPES
    assert SUPPORTED_RESPONSE_MIME_TYPES == [JSON]


def test_the_dockerfile_has_the_two_targets_the_image_assets_build():
    stages = re.findall(
        r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", (REPO_ROOT / "container" / "Dockerfile").read_text(), re.M | re.I
    )

    assert {InferenceImages.GPU_TARGET, InferenceImages.CPU_TARGET} <= set(stages)
