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
# Arm hosts, where the amd64 images cannot run: Graviton families carry a `g` after their generation
# (c7g, m7gd, c6gn, im4gn, g5g, r8g, ...); Grace superchips are named after the board (p6e-gb200).
GRAVITON_FAMILY = re.compile(r"^[a-z]+\d+[a-z]*g[a-z]*$")
GRACE_FAMILY = re.compile(r"-g[bh]\d+")


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


def is_arm(instance_type: str) -> bool:
    """Graviton or Grace (arm64) hosts."""
    name = family(instance_type)
    return GRAVITON_FAMILY.match(name) is not None or GRACE_FAMILY.search(name) is not None
