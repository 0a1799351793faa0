"""Command-line client for the Detectron2-on-SageMaker stacks (never imports the CDK app or the container)."""

__version__ = "0.2.0"
