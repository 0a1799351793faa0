"""SageMaker inference server for instance-segmentation models (detectron2 by default)."""
