"""The two builds of the one inference container, as ECR image assets."""

from pathlib import Path

from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam

from constructs import Construct

# Never part of the image: caches and test output change the asset hash without changing the image.
ASSET_EXCLUDES = [
    "**/__pycache__",
    "**/*.pyc",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "**/*.egg-info",
    "**/.coverage",
    "**/.DS_Store",
]


class InferenceImages(Construct):
    """`gpu` (CUDA; real-time, async, batch) and `cpu` (serverless) targets of `directory`/Dockerfile."""

    GPU_TARGET = "gpu"
    CPU_TARGET = "cpu"

    def __init__(self, scope: Construct, construct_id: str, *, directory: Path) -> None:
        super().__init__(scope, construct_id)
        self.gpu = self._image(directory, self.GPU_TARGET)
        self.cpu = self._image(directory, self.CPU_TARGET)

    def _image(self, directory: Path, target: str) -> ecr_assets.DockerImageAsset:
        return ecr_assets.DockerImageAsset(
            self,
            target.capitalize(),
            directory=str(directory),
            target=target,
            # SageMaker hosts run x86_64; a build on an arm64 laptop must not produce arm64 images.
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=ASSET_EXCLUDES,
        )

    def grant_pull(self, grantee: iam.IGrantable) -> None:
        self.gpu.repository.grant_pull(grantee)
        self.cpu.repository.grant_pull(grantee)
