"""`d2sm async` against moto: the request is uploaded under the async input prefix, the output or
failure object (moto writes it at once, to a bucket of its own) is downloaded beside the image."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import boto3

from .helpers import REGION, d2sm, detections, error_object, photo


def test_folder_results_saved_and_inputs_under_the_async_prefix(deployed, tmp_path, capsys):
    images = [photo(tmp_path / "a.jpg", seed=1), photo(tmp_path / "b.png", seed=2)]
    deployed.canned_async_results([(False, json.dumps(detections() | {"n": i})) for i in range(2)])

    run = d2sm(capsys, "async", tmp_path, "--poll", "0.05")

    assert run.code == 0, run.err
    # Requests are submitted in name order, so the queue's answers land in that order.
    assert [json.loads((tmp_path / f"{i.name}.json").read_text())["n"] for i in images] == [0, 1]
    keys = [
        o["Key"]
        for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=deployed.bucket)["Contents"]
    ]
    assert sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith("async/input/")) == ["a.jpg", "b.png"]
    uploaded = boto3.client("s3", region_name=REGION).get_object(
        Bucket=deployed.bucket, Key=next(k for k in keys if k.endswith("/a.jpg"))
    )
    assert uploaded["Body"].read() == images[0].read_bytes()
    assert uploaded["ContentType"] == "image/jpeg"


def test_failure_object_is_one_line_and_saves_nothing(deployed, tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    deployed.canned_async_results(
        [(True, json.dumps(error_object("internal_error", "request req-9 failed")))]
    )

    run = d2sm(capsys, "async", image, "--poll", "0.05")

    assert run.code == 1
    assert run.err.startswith("error: the endpoint wrote a failure to s3://")
    assert "internal_error" in run.err and run.err.count("\n") == 1
    assert not (tmp_path / "a.jpg.json").exists()


def test_error_object_as_output_fails(deployed, tmp_path, capsys):
    deployed.canned_async_results([(False, json.dumps(error_object()))])
    run = d2sm(capsys, "async", photo(tmp_path / "a.jpg"), "--poll", "0.05")
    assert run.code == 1
    assert "the model returned an error: invalid_input: the body is not a JPEG" in run.err


def test_timeout_saves_the_pending_requests_and_results_collects_them(
    deployed, tmp_path, capsys, monkeypatch
):
    deployed.canned_async_results([(False, json.dumps(detections()))])
    # moto writes the output during the call itself; to reach the timeout it must read as absent.
    from d2sm import async_invoke

    real_object_body = async_invoke.object_body
    monkeypatch.setattr(async_invoke, "object_body", lambda aws, uri: None)
    pending_file = tmp_path / "later.pending.json"
    image = photo(tmp_path / "a.jpg")
    run = d2sm(capsys, "async", image, "--poll", "0.05", "--timeout", "0.2", "--pending-file", pending_file)
    assert run.code == 1
    assert run.err == (
        f"error: no output after 0.2 s: 0 result(s) saved, 1 still running; collect them later with "
        f"`d2sm results {pending_file}`\n"
    )
    [request] = json.loads(pending_file.read_text())["requests"]
    assert request["image"] == str(image) and request["output"].startswith("s3://")

    monkeypatch.setattr(async_invoke, "object_body", real_object_body)
    collected = d2sm(capsys, "results", tmp_path, "--poll", "0.05")
    assert collected.code == 0, collected.err
    assert json.loads((tmp_path / "a.jpg.json").read_text()) == detections()
    assert not pending_file.exists()


def test_async_endpoint_missing(deployed, tmp_path, capsys):
    run = d2sm(capsys, "async", photo(tmp_path / "a.jpg"), "--endpoint", "gone")
    assert (run.code, run.err) == (1, "error: endpoint gone does not exist\n")


def test_ctrl_c_while_waiting_saves_the_pending_requests(deployed, tmp_path, capsys, monkeypatch):
    """A real SIGINT arrives while the client polls; what was submitted can be collected later."""
    deployed.canned_async_results([(False, json.dumps(detections() | {"n": i})) for i in range(2)])
    from d2sm import async_invoke

    real_object_body = async_invoke.object_body

    def interrupted_poll(aws, uri):
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the terminal: the handler runs right here
        return None

    monkeypatch.setattr(async_invoke, "object_body", interrupted_poll)
    photo(tmp_path / "a.jpg", seed=1)
    photo(tmp_path / "b.jpg", seed=2)
    run = d2sm(capsys, "async", tmp_path, "--poll", "0.05", "--pending-file", tmp_path / "run.pending.json")

    assert run.code == 130
    assert run.err == (
        "error: interrupted: 0 result(s) saved, 2 still running; collect them later with "
        f"`d2sm results {tmp_path / 'run.pending.json'}`\n"
    )
    saved = json.loads((tmp_path / "run.pending.json").read_text())
    assert sorted(Path(r["image"]).name for r in saved["requests"]) == ["a.jpg", "b.jpg"]

    monkeypatch.setattr(async_invoke, "object_body", real_object_body)
    collected = d2sm(capsys, "results", tmp_path / "run.pending.json", "--poll", "0.05", "--json")
    assert collected.code == 0, collected.err
    lines = [json.loads(line) for line in collected.out.splitlines()]
    assert sorted(line["image"] for line in lines[:2]) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert lines[2] == {"done": True, "saved": 2}
    assert {json.loads((tmp_path / n).read_text())["n"] for n in ("a.jpg.json", "b.jpg.json")} == {0, 1}
    assert not (tmp_path / "run.pending.json").exists()


def test_results_of_something_else_is_one_line(tmp_path, capsys):
    (tmp_path / "x.pending.json").write_text('{"hello": 1}')
    run = d2sm(capsys, "results", tmp_path / "x.pending.json")
    assert (run.code, run.err) == (
        1,
        f"error: {tmp_path / 'x.pending.json'} is not a pending file written by `d2sm async`\n",
    )
    empty = d2sm(capsys, "results", tmp_path / "nothing")
    assert (empty.code, empty.err) == (1, f"error: {tmp_path / 'nothing'} does not exist\n")
