"""checkov over the templates of every configuration the repository ships.

checkov pins a boto3 older than the one moto and the client need, so it lives in a virtual
environment of its own that `make install` creates (`.venv-checkov`, from requirements-checkov.txt);
$CHECKOV names another checkov executable. Every finding is fixed or skipped on its resource, in
checkov's own syntax (`Metadata: checkov: skip: [{id, comment}]`), with the reason as the comment.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.synthesis import REPO_ROOT, SHIPPED_ENVIRONMENTS


def checkov_executable() -> str | None:
    candidates = [os.environ.get("CHECKOV"), str(REPO_ROOT / ".venv-checkov" / "bin" / "checkov")]
    return next((c for c in candidates if c and Path(c).is_file()), None) or shutil.which("checkov")


CHECKOV = checkov_executable()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHECKOV is None, reason="checkov is not installed: `make install` creates .venv-checkov"
    ),
]

# What each skip is for (its reason is on the resource): check id, template, logical id prefix.
SKIPPED = {
    "CKV_AWS_18": "the access-log bucket does not log into itself",
    "CKV_AWS_115": "no reserved concurrency for the batch error-count function",
    "CKV_AWS_116": "no dead-letter queue for a function only invoked synchronously",
    "CKV_AWS_117": "no VPC for a function that only reads S3",
    "CKV_AWS_370": "serverless endpoints do not support network isolation",
}


@pytest.fixture(scope="module")
def outdirs(shipped) -> dict[str, Path]:
    """The cloud assembly of the default configuration and of each config/<env>.json."""
    return {"default": shipped(None).outdir, **{env: shipped(env).outdir for env in SHIPPED_ENVIRONMENTS}}


@pytest.fixture(scope="module")
def report(outdirs) -> dict[str, dict]:
    """checkov's JSON report per configuration (one run over every assembly)."""
    results = {}
    for name, outdir in outdirs.items():
        assert CHECKOV is not None  # the module is skipped without it
        completed = subprocess.run(
            [CHECKOV, "--directory", str(outdir), "--framework", "cloudformation", "--output", "json"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        )
        assert completed.returncode in (0, 1), completed.stderr[-2000:]
        parsed = json.loads(completed.stdout)
        results[name] = parsed[0] if isinstance(parsed, list) else parsed
    return results


def test_every_shipped_configuration_is_scanned(report):
    assert sorted(report) == sorted({"default", *SHIPPED_ENVIRONMENTS})
    for name, result in report.items():
        assert result["summary"]["parsing_errors"] == 0, name
        assert result["summary"]["passed"] > 30, name


def test_checkov_finds_nothing_that_is_not_skipped_with_a_reason(report):
    failed = {
        name: [(c["check_id"], c["file_path"], c["resource"]) for c in result["results"]["failed_checks"]]
        for name, result in report.items()
    }

    assert failed == {name: [] for name in report}


def test_every_skip_is_a_known_one_with_its_reason(report):
    skipped = sorted(
        (name, check["check_id"], Path(check["file_path"]).name, check["resource"].split(".")[-1][:-8])
        for name, result in report.items()
        for check in result["results"]["skipped_checks"]
    )

    assert {check_id for _, check_id, _, _ in skipped} == set(SKIPPED)
    for name, result in report.items():
        for check in result["results"]["skipped_checks"]:
            assert len(check["check_result"].get("suppress_comment", "")) > 60, (name, check["check_id"])
    # Per configuration: the access-log bucket, and where they are deployed the serverless model and
    # the batch pipeline's function.
    default = [entry[1:] for entry in skipped if entry[0] == "default"]
    assert default == [
        ("CKV_AWS_115", "Detectron2-Batch.template.json", "PipelineErrorCount"),
        ("CKV_AWS_116", "Detectron2-Batch.template.json", "PipelineErrorCount"),
        ("CKV_AWS_117", "Detectron2-Batch.template.json", "PipelineErrorCount"),
        ("CKV_AWS_18", "Detectron2-Shared.template.json", "ArtifactsAccessLogs"),
        ("CKV_AWS_370", "Detectron2-Serverless.template.json", "Model"),
    ]
