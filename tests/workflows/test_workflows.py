"""The GitHub workflows: schema-valid, actionlint-clean, and the diff comment updated in place."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    return str(BIN / name) if (BIN / name).exists() else shutil.which(name)


def test_there_are_workflows_for_pull_requests_and_deploys():
    assert {w.name for w in WORKFLOWS} == {"pull-request.yml", "deploy.yml"}


def test_workflows_match_the_github_workflow_schema():
    """check-jsonschema's vendored SchemaStore schema: runs offline, catches misspelt keys."""
    checker = tool("check-jsonschema")
    assert checker is not None, "check-jsonschema is missing: make install (requirements-dev.txt) installs it"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes():
    """actionlint also knows each action's runtime: it flags actions still on a retired Node."""
    actionlint = tool("actionlint")
    assert actionlint is not None, "actionlint is missing: make install (requirements-dev.txt) installs it"
    result = subprocess.run([actionlint, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


FAKE_GITHUB = r"""
const post = require(process.argv[2]);
const state = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8"));
let next = 1000;
const calls = [];
const github = {
  paginate: async (method, params) => state.comments.filter((c) => c.issue === params.issue_number),
  rest: { issues: {
    listComments: "listComments",
    createComment: async ({ issue_number, body }) => {
      calls.push("create");
      state.comments.push({ id: next++, issue: issue_number, body, user: { type: "Bot" } });
    },
    updateComment: async ({ comment_id, body }) => {
      calls.push(`update ${comment_id}`); state.comments.find((c) => c.id === comment_id).body = body;
    },
    deleteComment: async ({ comment_id }) => {
      calls.push(`delete ${comment_id}`); state.comments = state.comments.filter((c) => c.id !== comment_id);
    },
  } },
};
const context = { repo: { owner: "o", repo: "r" }, issue: { number: 7 } };
post({ github, context, dir: process.argv[4] }).then(() => console.log(JSON.stringify({ state, calls })));
"""


@pytest.fixture
def post_comments(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (the CDK CLI needs it too)")
    script = tmp_path / "fake.js"
    script.write_text(FAKE_GITHUB)
    state_file = tmp_path / "state.json"
    state_file.write_text(
        json.dumps({"comments": [{"id": 1, "issue": 7, "body": "LGTM", "user": {"type": "User"}}]})
    )

    def post(pages: list[str]) -> tuple[list[dict], list[str]]:
        pages_dir = tmp_path / "pages"
        shutil.rmtree(pages_dir, ignore_errors=True)
        pages_dir.mkdir()
        for i, page in enumerate(pages, start=1):
            (pages_dir / f"comment-{i}.md").write_text(page)
        module = REPO / ".github" / "scripts" / "cdk-diff-comment.js"
        result = subprocess.run(
            [node, str(script), str(module), str(state_file), str(pages_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        output = json.loads(result.stdout)
        state_file.write_text(json.dumps(output["state"]))
        return output["state"]["comments"], output["calls"]

    return post


def test_diff_comment_is_updated_in_place(post_comments):
    comments, calls = post_comments(["<!-- cdk-diff 1 -->\nv1 page 1", "<!-- cdk-diff 2 -->\nv1 page 2"])
    assert calls == ["create", "create"]
    first_ids = [c["id"] for c in comments if c["body"].startswith("<!-- cdk-diff")]

    comments, calls = post_comments(["<!-- cdk-diff 1 -->\nv2 page 1"])

    # Page 1 is the same comment, edited; page 2 is no longer needed and goes; the human's stays.
    assert calls == [f"update {first_ids[0]}", f"delete {first_ids[1]}"]
    assert [(c["id"], c["body"]) for c in comments] == [
        (1, "LGTM"),
        (first_ids[0], "<!-- cdk-diff 1 -->\nv2 page 1"),
    ]

    _, calls = post_comments(["<!-- cdk-diff 1 -->\nv2 page 1"])
    assert calls == []  # unchanged: no edit, no notification


def test_the_deploy_job_verifies_what_it_deployed_and_fails_on_a_failed_check():
    import yaml

    steps = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yml").read_text())["jobs"]["deploy"][
        "steps"
    ]
    names = [step.get("name") for step in steps]
    deploy, verify = names.index("Deploy"), names.index("Verify every deployed mode (d2sm verify)")

    assert verify == deploy + 1
    script = steps[verify]["run"]
    assert script.strip().splitlines()[-1] == '.venv/bin/d2sm --app-name "$app_name" verify'
    # No `|| true` or continue-on-error: the step's (and the job's) status is d2sm's exit status.
    assert "||" not in script and "continue-on-error" not in steps[verify]
