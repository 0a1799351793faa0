"""What an `ml.*` instance type implies for this project's images and scaling."""

import re
from dataclasses import dataclass

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
# CPU families whose processors have bfloat16 instructions (AVX512_BF16, AMX), which the container's
# CPU_PRECISION=bf16 needs: Sapphire Rapids (7i) and Granite Rapids (8i). Ice Lake (6i) and the
# older Xeons (c5, m5, r5) lack them, and the container refuses bf16 there at start.
BF16_CPU_FAMILY = re.compile(r"^[cmr][78]i(-flex)?$")


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


def has_bf16(instance_type: str) -> bool:
    """A CPU instance type whose processor has bfloat16 (GPU types answer False: their CPU does not run
    the model)."""
    return BF16_CPU_FAMILY.match(family(instance_type)) is not None


def is_arm(instance_type: str) -> bool:
    """Graviton or Grace (arm64) hosts."""
    name = family(instance_type)
    return GRAVITON_FAMILY.match(name) is not None or GRACE_FAMILY.search(name) is not None


@dataclass(frozen=True)
class InstanceResources:
    """What one instance offers an inference component: vCPUs, memory and GPUs."""

    vcpus: int
    memory_mib: int
    gpus: int


def _sizes(family_name: str, table: dict[str, tuple[int, int, int]]) -> dict[str, InstanceResources]:
    return {
        f"ml.{family_name}.{size}": InstanceResources(vcpus, memory_gib * 1024, gpus)
        for size, (vcpus, memory_gib, gpus) in table.items()
    }


# vCPUs, memory (GiB) and NVIDIA GPUs of the types inference components may use here (SageMaker's
# instance-type pages). Components are placed by these numbers, so a type missing here is refused
# rather than guessed.
_G_SIZES = {
    "xlarge": (4, 16, 1),
    "2xlarge": (8, 32, 1),
    "4xlarge": (16, 64, 1),
    "8xlarge": (32, 128, 1),
    "12xlarge": (48, 192, 4),
    "16xlarge": (64, 256, 1),
}
_G_LARGE_SIZES = {**_G_SIZES, "24xlarge": (96, 384, 4), "48xlarge": (192, 768, 8)}
INSTANCE_RESOURCES: dict[str, InstanceResources] = {
    **_sizes("g4dn", _G_SIZES),
    **_sizes("g5", _G_LARGE_SIZES),
    **_sizes("g6", _G_LARGE_SIZES),
    **_sizes("p4d", {"24xlarge": (96, 1152, 8)}),
    **_sizes("p5", {"48xlarge": (192, 2048, 8)}),
    **_sizes(
        "m5",
        {
            "large": (2, 8, 0),
            "xlarge": (4, 16, 0),
            "2xlarge": (8, 32, 0),
            "4xlarge": (16, 64, 0),
            "12xlarge": (48, 192, 0),
            "24xlarge": (96, 384, 0),
        },
    ),
    **_sizes(
        "c5",
        {
            "large": (2, 4, 0),
            "xlarge": (4, 8, 0),
            "2xlarge": (8, 16, 0),
            "4xlarge": (16, 32, 0),
            "9xlarge": (36, 72, 0),
            "18xlarge": (72, 144, 0),
        },
    ),
}


def model_copies(instance_type: str) -> int:
    """How many model copies the container loads on this type: one per GPU, one on CPU (and on a
    type missing from INSTANCE_RESOURCES)."""
    resources = INSTANCE_RESOURCES.get(instance_type)
    return max(1, resources.gpus) if resources is not None else 1
