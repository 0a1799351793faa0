"""The role SageMaker assumes to run the container: least privilege, no managed policies."""

from collections.abc import Sequence

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam

from constructs import Construct

from .images import InferenceImages
from .model_data import ModelData
from .nag import acknowledge, acknowledge_wildcard_resources
from .storage import ArtifactStore

SAGEMAKER_LOG_GROUPS = "/aws/sagemaker/*"
SAGEMAKER_METRIC_NAMESPACES = "/aws/sagemaker/*"


class SageMakerExecutionRole(Construct):
    """Pull the two images, read the model tarball, write logs and metrics; read `read_prefixes`
    and write `write_prefixes` of the artifact store, with its key.

    The prefixes are those of the enabled modes that move data through the store (async, batch).
    What lives in a mode's own stack (the async topics) is granted there.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        store: ArtifactStore,
        read_prefixes: Sequence[str],
        write_prefixes: Sequence[str],
        images: InferenceImages,
        model_data: ModelData,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="Detectron2 inference containers (all SageMaker inference modes)",
        )
        images.grant_pull(self.role)
        model_data.grant_read(self.role)
        if read_prefixes or write_prefixes:
            self._grant_inference_io(store, read_prefixes, write_prefixes)
        self._grant_logs_and_metrics()
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level "
            "permissions; PutMetricData is limited to the /aws/sagemaker/* namespaces by condition.",
        )

    def _grant_inference_io(
        self, store: ArtifactStore, read_prefixes: Sequence[str], write_prefixes: Sequence[str]
    ) -> None:
        inputs = [store.objects_under(prefix) for prefix in read_prefixes]
        outputs = [store.objects_under(prefix) for prefix in write_prefixes]
        if inputs:
            # Transform jobs list their S3Prefix input; async reads the one object it was given.
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[store.bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}/*" for prefix in read_prefixes]}},
                )
            )
            self.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=inputs))
        if outputs:
            self.role.add_to_policy(
                iam.PolicyStatement(actions=["s3:AbortMultipartUpload", "s3:PutObject"], resources=outputs)
            )
        store.key.grant(self.role, "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")
        acknowledge_wildcard_resources(
            self.role,
            inputs + outputs,
            "Registered model tarballs, requests and results are created at run time under these fixed "
            "prefixes.",
        )

    def _grant_logs_and_metrics(self) -> None:
        log_groups = Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=SAGEMAKER_LOG_GROUPS,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                resources=[log_groups],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": SAGEMAKER_METRIC_NAMESPACES}},
            )
        )
        acknowledge_wildcard_resources(
            self.role,
            [log_groups],
            "SageMaker names endpoint and transform-job log groups at run time, all under /aws/sagemaker/.",
        )
