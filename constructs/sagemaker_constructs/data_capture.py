"""Data capture of an instance-based endpoint into the artifact store, encrypted with its key."""

from aws_cdk import aws_sagemaker as sagemaker

from .settings import DataCaptureConfig
from .storage import ArtifactStore

# Captured as text; other content types (the images) are base64-encoded by SageMaker.
JSON_CONTENT_TYPES = ["application/json"]


def data_capture_config(
    store: ArtifactStore, prefix: str, config: DataCaptureConfig
) -> sagemaker.CfnEndpointConfig.DataCaptureConfigProperty:
    """Capture `config.sampling_percentage` % of calls under `s3://<artifacts>/<prefix>/`.

    SageMaker writes the captures with the endpoint's execution role, which the shared stack lets
    write under `prefix` (and use the key) while capture is configured.
    """
    return sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
        enable_capture=True,
        initial_sampling_percentage=config.sampling_percentage,
        destination_s3_uri=store.url_of(prefix),
        kms_key_id=store.key.key_arn,
        capture_options=[
            sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode=mode)
            for mode in config.capture_modes
        ],
        capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
            json_content_types=JSON_CONTENT_TYPES
        ),
    )
