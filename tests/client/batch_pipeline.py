"""The deployed batch pipeline, played by a thread: on the submit marker it starts the transform job
(in moto) and writes `<image>.out` results and the batch summary object, per the batch convention."""

from __future__ import annotations

import json
import threading
import time

import boto3
from moto.sagemaker.models import sagemaker_backends

import d2sm_contract as contract

from .helpers import ACCOUNT, JOB_NAME_PREFIX, REGION

SUBMIT, INPUT, OUTPUT = (
    contract.BATCH_SUBMIT_PREFIX,
    contract.BATCH_INPUT_PREFIX,
    contract.BATCH_OUTPUT_PREFIX,
)
SUMMARY = contract.BATCH_SUMMARY_OBJECT


class Pipeline(threading.Thread):
    """What the deployed pipeline does, per the batch convention (README, "Batch transform")."""

    def __init__(self, bucket: str, answers: dict[str, dict], *, status: str = "Completed", reason: str = ""):
        """status NotCreated: the create call is refused, only the summary says so."""
        super().__init__(daemon=True)
        self.bucket, self.answers, self.status, self.reason = bucket, answers, status, reason
        self.inputs_at_submit: list[str] = []
        self.job_name: str | None = None
        self.stop = threading.Event()

    def run(self):
        s3 = boto3.client("s3", region_name=REGION)
        while not self.stop.is_set():
            markers = s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{SUBMIT}/").get("Contents", [])
            if markers:
                break
            time.sleep(0.02)
        else:
            return
        batch_id = markers[0]["Key"].rsplit("/", 1)[1]
        listed = s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{INPUT}/{batch_id}/").get("Contents", [])
        self.inputs_at_submit = sorted(o["Key"] for o in listed)
        self.job_name = JOB_NAME_PREFIX + batch_id
        if self.status == "NotCreated":
            summary = {"batchId": batch_id, "status": "NotCreated", "failureReason": self.reason}
            s3.put_object(Bucket=self.bucket, Key=f"{OUTPUT}/{batch_id}/{SUMMARY}", Body=json.dumps(summary))
            return
        boto3.client("sagemaker", region_name=REGION).create_transform_job(
            TransformJobName=self.job_name,
            ModelName="Batch-model",
            TransformInput={
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{self.bucket}/{INPUT}/{batch_id}/",
                    }
                }
            },
            TransformOutput={"S3OutputPath": f"s3://{self.bucket}/{OUTPUT}/{batch_id}/"},
            TransformResources={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1},
        )
        # InProgress from its creation (see the `pipeline` fixture) until the outputs exist.
        job = sagemaker_backends[ACCOUNT][REGION].transform_jobs[self.job_name]
        if self.status == "Completed":
            for key in self.inputs_at_submit:
                name = key.rsplit("/", 1)[1]
                s3.put_object(
                    Bucket=self.bucket,
                    Key=f"{OUTPUT}/{batch_id}/{name}.out",
                    Body=json.dumps(self.answers[name]),
                )
            summary = {"batch_id": batch_id, "records": len(self.inputs_at_submit)}
            s3.put_object(Bucket=self.bucket, Key=f"{OUTPUT}/{batch_id}/{SUMMARY}", Body=json.dumps(summary))
        # The reason first: a DescribeTransformJob in between must never see Failed without it.
        job.failure_reason = self.reason
        job.transform_job_status = self.status
