"""`d2sm batch` against moto, with the batch pipeline played by a thread: on the submit marker it
starts the transform job (in moto) and writes `<image>.out` results and `_summary.json`."""

from __future__ import annotations

import json

import boto3
import pytest

from .helpers import JOB_NAME_PREFIX, REGION, d2sm, detections, error_object, photo


def test_folder_submitted_followed_and_downloaded(deployed, pipeline, tmp_path, capsys):
    photo(tmp_path / "a.jpg", seed=1)
    photo(tmp_path / "b.png", seed=2)
    answers = {"a.jpg": detections() | {"n": 1}, "b.png": detections() | {"n": 2}}
    runner = pipeline(answers)

    run = d2sm(capsys, "batch", tmp_path, "--batch-id", "run-1", "--poll", "0.05")

    assert run.code == 0, run.err
    # The marker came last: when the pipeline saw it, every image was already uploaded.
    assert runner.inputs_at_submit == ["batch/input/run-1/a.jpg", "batch/input/run-1/b.png"]
    assert runner.job_name == "detectron2-batch-run-1"
    assert json.loads((tmp_path / "a.jpg.json").read_text()) == answers["a.jpg"]
    assert json.loads((tmp_path / "b.png.json").read_text()) == answers["b.png"]
    assert json.loads((tmp_path / "batch-run-1.summary.json").read_text()) == {
        "batch_id": "run-1",
        "records": 2,
    }
    marker = boto3.client("s3", region_name=REGION).get_object(
        Bucket=deployed.bucket, Key="batch/submit/run-1"
    )
    assert marker["Body"].read() == b""
    assert "batch run-1: 2 result(s) saved" in run.out


def test_generated_batch_id_follows_the_convention(deployed, pipeline, tmp_path, capsys):
    photo(tmp_path / "a.jpg")
    runner = pipeline({"a.jpg": detections()})
    run = d2sm(capsys, "batch", tmp_path, "--poll", "0.05")
    assert run.code == 0, run.err
    batch_id = runner.job_name.removeprefix(JOB_NAME_PREFIX)
    assert len(runner.job_name) <= 63
    assert batch_id.replace("-", "").isalnum()
    assert f"batch {batch_id}:" in run.out


def test_error_object_record_fails_only_that_image(deployed, pipeline, tmp_path, capsys):
    photo(tmp_path / "a.jpg", seed=1)
    photo(tmp_path / "b.jpg", seed=2)
    pipeline({"a.jpg": detections(), "b.jpg": error_object()})

    run = d2sm(capsys, "batch", tmp_path, "--batch-id", "mixed", "--poll", "0.05")

    assert run.code == 1
    assert (tmp_path / "a.jpg.json").exists() and not (tmp_path / "b.jpg.json").exists()
    assert "the model returned an error: invalid_input" in run.err
    assert run.err.endswith("error: 1 of 2 images failed\n")


def test_failed_job_is_one_line_with_its_reason(deployed, pipeline, tmp_path, capsys):
    photo(tmp_path / "a.jpg")
    pipeline({}, status="Failed", reason="ClientError: See job logs for more information")

    run = d2sm(capsys, "batch", tmp_path, "--batch-id", "bad", "--poll", "0.05")

    assert (run.code, run.err) == (
        1,
        "error: transform job detectron2-batch-bad Failed: ClientError: See job logs for more information\n",
    )


def test_job_the_pipeline_could_not_create_is_one_line(deployed, pipeline, tmp_path, capsys):
    photo(tmp_path / "a.jpg")
    pipeline({}, status="NotCreated", reason="ResourceLimitExceeded: quota")
    run = d2sm(capsys, "batch", tmp_path, "--batch-id", "refused", "--poll", "0.05", "--timeout", "30")
    assert (run.code, run.err) == (
        1,
        "error: batch refused: the pipeline reports NotCreated: ResourceLimitExceeded: quota\n",
    )


def test_job_never_started_times_out_naming_the_batch(deployed, tmp_path, capsys):
    photo(tmp_path / "a.jpg")
    run = d2sm(capsys, "batch", tmp_path, "--batch-id", "idle", "--poll", "0.05", "--timeout", "0.3")
    assert run.code == 1
    assert run.err == (
        "error: transform job detectron2-batch-idle is still 'waiting for the pipeline to start the job' "
        "after 0.3 s; batch id idle\n"
    )


@pytest.mark.parametrize(
    ("batch_id", "message"),
    [
        (
            "has_underscore",
            "error: batch id 'has_underscore' may only hold letters, digits and '-', and must end with a "
            "letter or digit\n",
        ),
        (
            "ends-",
            "error: batch id 'ends-' may only hold letters, digits and '-', and must end with a letter or "
            "digit\n",
        ),
        (
            "x" * 50,
            f"error: batch id '{'x' * 50}' is too long: {JOB_NAME_PREFIX}{'x' * 50} must be at most 63 "
            "characters (at most 46 for the id)\n",
        ),
    ],
)
def test_bad_batch_id_uploads_nothing(deployed, tmp_path, capsys, batch_id, message):
    photo(tmp_path / "a.jpg")
    run = d2sm(capsys, "batch", tmp_path, "--batch-id", batch_id)
    assert (run.code, run.err) == (1, message)
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=deployed.bucket)


def test_stack_without_the_pipeline_outputs(deployed, tmp_path, capsys):
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.delete_stack(StackName="Detectron2-Batch")
    from .helpers import stack

    stack(cloudformation, "Detectron2-Batch", {"InputUri": f"s3://{deployed.bucket}/batch/input"})
    photo(tmp_path / "a.jpg")
    run = d2sm(capsys, "batch", tmp_path)
    assert run.code == 1
    assert run.err == (
        "error: stack Detectron2-Batch has no output JobNamePrefix, SubmitUri, OutputUri: deploy the batch "
        "pipeline (batch.enabled) first\n"
    )
