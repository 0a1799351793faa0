"""`d2sm verify` against moto: every deployed mode answers the bundled photo with a document of the
response schema, and every endpoint runs the endpoint config its stack deployed."""

from __future__ import annotations

import json

import boto3
import pytest
from moto.sagemaker.models import sagemaker_backends

from d2sm.verify import PHOTO, PHOTO_SIZE

from .helpers import ACCOUNT, ENDPOINTS, REGION, d2sm, detections, error_object

PHOTO_ANSWER = detections(width=PHOTO_SIZE["width"], height=PHOTO_SIZE["height"])


def rows(out: str) -> dict[str, list[str]]:
    """The table by its mode column: the other columns split on runs of two spaces."""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["mode", "endpoint", "status", "latency", "instances", "verdict"]
    found = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        found[cells[0]] = cells[1:]
    return found


def test_the_bundled_photo_is_the_size_the_schema_check_expects():
    from PIL import Image

    with Image.open(PHOTO) as image:
        assert image.size == (PHOTO_SIZE["width"], PHOTO_SIZE["height"])


def test_every_deployed_mode_passes(deployed, pipeline, capsys):  # noqa: F811
    deployed.canned_results([json.dumps(PHOTO_ANSWER), json.dumps(PHOTO_ANSWER)])
    deployed.canned_async_results([(False, json.dumps(PHOTO_ANSWER))])
    runner = pipeline({"verify.jpg": PHOTO_ANSWER})

    run = d2sm(capsys, "verify", "--poll", "0.05")

    assert (run.code, run.err) == (0, "")
    table = rows(run.out)
    assert list(table) == ["realtime", "serverless", "async", "batch"]
    assert table["realtime"][:2] == [ENDPOINTS["Realtime"], "InService"]
    assert table["realtime"][2].endswith(" ms") and table["realtime"][3:] == ["1", "ok"]
    assert table["serverless"][-1] == table["async"][-1] == table["batch"][-1] == "ok"
    assert table["batch"][1] == "Completed"
    # The batch went through the pipeline's convention: one image under a verify-<time> batch id.
    assert runner.job_name.startswith("detectron2-batch-verify-")
    assert [key.rsplit("/", 1)[1] for key in runner.inputs_at_submit] == ["verify.jpg"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (
            error_object("internal_error", "CUDA out of memory"),
            "the model returned an error: internal_error: CUDA out of memory",
        ),
        (
            detections(width=320, height=240),
            "the answer breaks the response schema: image is {'height': 240, 'width': 320}, expected "
            "{'height': 480, 'width': 640}; instances[0].mask is not a COCO RLE of the image's size; "
            "instances[1].mask is not a COCO RLE of the image's size",
        ),
        (
            {**PHOTO_ANSWER, "instances": [{**PHOTO_ANSWER["instances"][0], "score": 1.5}]},
            "the answer breaks the response schema: instances[0].score 1.5 is not in [0, 1]",
        ),
    ],
)
def test_a_mode_answering_wrong_fails_with_one_line_naming_it(deployed, capsys, answer, problem):
    # moto keys canned answers by request, not by endpoint: the real-time endpoint answers wrong,
    # the async one (its own queue) right.
    deployed.canned_results([json.dumps(answer)])
    deployed.canned_async_results([(False, json.dumps(PHOTO_ANSWER))])

    run = d2sm(capsys, "verify", "--mode", "realtime", "--mode", "async", "--poll", "0.05")

    assert run.code == 1
    table = rows(run.out)
    assert (table["realtime"][-1], table["async"][-1]) == ("FAIL", "ok")
    assert run.err.splitlines() == [
        f"error: realtime: endpoint {ENDPOINTS['Realtime']}: {problem}",
        "error: 1 of 2 checks failed",
    ]


def test_an_endpoint_running_another_config_than_its_stack_deployed_fails(deployed, capsys):
    """A blue/green update SageMaker rolled back: the endpoint runs the previous config."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_endpoint_config(
        EndpointConfigName="Realtime-config-2",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "Realtime-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.g4dn.xlarge",
            }
        ],
    )
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.delete_stack(StackName="Detectron2-Realtime")
    from .helpers import stack

    stack(
        cloudformation,
        "Detectron2-Realtime",
        {"EndpointName": ENDPOINTS["Realtime"], "EndpointConfigName": "Realtime-config-2"},
    )
    deployed.canned_results([json.dumps(PHOTO_ANSWER)])

    run = d2sm(capsys, "verify", "--mode", "realtime")

    assert run.code == 1
    assert rows(run.out)["realtime"][-1] == "FAIL"
    assert run.err.splitlines() == [
        f"error: realtime: endpoint {ENDPOINTS['Realtime']} runs endpoint config Realtime-config, but "
        "stack Detectron2-Realtime deployed Realtime-config-2: SageMaker rolled the update back "
        '(docs/first-deploy.md, "After a rollback")',
        "error: 1 of 1 checks failed",
    ]


def test_an_endpoint_not_in_service_fails_without_invoking(deployed, capsys):
    sagemaker_backends[ACCOUNT][REGION].endpoints[ENDPOINTS["Serverless"]].endpoint_status = "Updating"

    run = d2sm(capsys, "verify", "--mode", "serverless")

    assert run.code == 1
    assert rows(run.out)["serverless"] == [ENDPOINTS["Serverless"], "Updating", "-", "-", "FAIL"]
    assert (
        run.err.splitlines()[0]
        == f"error: serverless: endpoint {ENDPOINTS['Serverless']} is Updating, not InService"
    )


def test_skip_batch_and_a_mode_that_is_not_deployed(deployed, capsys):
    boto3.client("cloudformation", region_name=REGION).delete_stack(StackName="Detectron2-Async")
    deployed.canned_results([json.dumps(PHOTO_ANSWER), json.dumps(PHOTO_ANSWER)])

    run = d2sm(capsys, "verify", "--skip-batch")

    assert run.code == 0, run.err
    table = rows(run.out)
    assert table["async"] == ["-", "not deployed", "-", "-", "skipped"]
    assert table["batch"] == ["-", "--skip-batch", "-", "-", "skipped"]


def test_a_mode_asked_for_by_name_must_be_deployed(deployed, capsys):
    boto3.client("cloudformation", region_name=REGION).delete_stack(StackName="Detectron2-Async")

    run = d2sm(capsys, "verify", "--mode", "async")

    assert run.code == 1
    assert run.err.splitlines() == [
        "error: async: stack Detectron2-Async is not deployed",
        "error: 1 of 1 checks failed",
    ]


def test_no_stack_of_the_app_is_one_line(deployed, capsys):
    run = d2sm(capsys, "--app-name", "Other", "verify")

    assert run.code == 1
    assert run.err == "error: no stack of app Other is deployed: deploy it, or pass --app-name\n"


def test_help_documents_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        d2sm(capsys, "verify", "--help")

    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--mode", "--skip-batch", "--timeout", "--poll"):
        assert flag in text
    assert "EndpointConfig" in text and "Exit status 1" in text
