"""What an `ml.*` instance type implies for this project's images and scaling."""

import re

INSTANCE_TYPE_PATTERN = re.compile(r"^ml\.([a-z][a-z0-9-]*)\.([a-z0-9]+)$")

# Families whose accelerators the GPU image (CUDA build of the container) can use.
GPU_FAMILY_PREFIXES = ("g", "p")
# Inferentia/Trainium need a Neuron-compiled model and image, which this project does not build.
NEURON_FAMILY_PREFIXES = ("inf", "trn")
BURSTABLE_FAMILY = re.compile(r"^t\d")
# The GPU image is built on CUDA 13, which dropped Kepler (ml.p2) and Volta (ml.p3, ml.p3dn).
PRE_TURING_GPU_FAMILY = re.compile(r"^p[23]")


def family(instance_type: str) -> str:
    """`ml.g5.xlarge` -> `g5`."""
    match = INSTANCE_TYPE_PATTERN.match(instance_type)
    if match is None:
        raise ValueError(f"not an ml.<family>.<size> instance type: {instance_type!r}")
    return match.group(1)


def is_neuron(instance_type: str) -> bool:
    return family(instance_type).startswith(NEURON_FAMILY_PREFIXES)


def is_gpu(instance_type: str) -> bool:
    return not is_neuron(instance_type) and family(instance_type).startswith(GPU_FAMILY_PREFIXES)


def is_burstable(instance_type: str) -> bool:
    return BURSTABLE_FAMILY.match(family(instance_type)) is not None


def is_pre_turing_gpu(instance_type: str) -> bool:
    return PRE_TURING_GPU_FAMILY.match(family(instance_type)) is not None
