"""Batch transform: the model and the S3 prefixes that transform jobs will use.

Jobs are not CloudFormation resources; the event-driven pipeline that starts them (Step Functions
`CreateTransformJob.sync`) attaches to this construct's attributes in a later change. The execution
role already reads the input prefix and writes the output prefix (SageMakerExecutionRole).
"""

from constructs import Construct

from .packaged_model import PackagedModel
from .settings import BatchConfig
from .storage import ArtifactStore


class BatchTransformResources(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: PackagedModel,
        config: BatchConfig,
        store: ArtifactStore,
    ) -> None:
        super().__init__(scope, construct_id)
        self.model = model
        self.instance_type = config.instance_type
        self.input_uri = store.url_of(store.BATCH_INPUT_PREFIX)
        self.output_uri = store.url_of(store.BATCH_OUTPUT_PREFIX)
