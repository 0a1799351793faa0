"""scripts/cdk_diff.py: parsing the CDK CLI's diff, PR comment pages, and `make diff` end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
cdk_diff = load_script("cdk_diff", REPO / "scripts" / "cdk_diff.py")

BUCKET_REPLACED = """Stack Detectron2-Shared
Resources
[~] AWS::S3::Bucket Artifacts/Bucket ArtifactsBucket88671897 replace
 └─ [+] BucketName (requires replacement)
     └─ detectron2-artifacts-renamed
[~] AWS::S3::BucketPolicy Artifacts/Bucket/Policy ArtifactsBucketPolicyBC103148 replace
 └─ [~] Bucket (requires replacement)
[~] AWS::SSM::Parameter Registry/PackageArn RegistryPackageArn1234
 └─ [~] Value
[+] AWS::SNS::Topic Topic Topic1234
[-] AWS::KMS::Key Artifacts/Key ArtifactsKey1234 orphan
[-] AWS::IAM::Policy Policy Policy1234 destroy
"""


def test_parse_counts_resources_and_flags_stateful_replacements():
    diff = cdk_diff.parse("Detectron2-Shared", BUCKET_REPLACED)
    assert (diff.added, diff.changed, diff.removed, diff.replaced) == (1, 3, 2, 2)
    # The bucket policy is replaced too, but holds no data; the removed IAM policy neither.
    assert diff.destructive == [
        "AWS::S3::Bucket ArtifactsBucket88671897 replace",
        "AWS::KMS::Key ArtifactsKey1234 orphan",
    ]
    assert diff.summary.startswith(
        "Detectron2-Shared: 1 to add, 3 to change (2 replaced), 2 to destroy — DESTRUCTIVE"
    )


def test_endpoint_config_replacement_is_not_destructive():
    text = "[~] AWS::SageMaker::EndpointConfig Serverless/Config ServerlessConfigCE17EE67 replace\n"
    diff = cdk_diff.parse("S", text)
    assert (diff.changed, diff.replaced, diff.destructive) == (1, 1, [])


def test_a_new_model_package_version_is_not_destructive_but_removing_the_package_is():
    replaced = "[~] AWS::SageMaker::ModelPackage Registry/Package RegistryPackage1234 replace\n"
    removed = "[-] AWS::SageMaker::ModelPackage Registry/Package RegistryPackage1234 destroy\n"
    assert cdk_diff.parse("S", replaced).destructive == []
    assert cdk_diff.parse("S", replaced).replaced == 1
    assert cdk_diff.parse("S", removed).destructive == [
        "AWS::SageMaker::ModelPackage RegistryPackage1234 destroy"
    ]


def test_a_removed_stack_destroys_its_stateful_resources():
    template = {"Resources": {"B": {"Type": "AWS::S3::Bucket"}, "R": {"Type": "AWS::IAM::Role"}}}
    diff = cdk_diff.removed_stack("Old-Shared", template)
    assert diff.removed == 2 and diff.destructive == ["AWS::S3::Bucket B destroy"]


def test_comment_pages_stay_under_the_limit_and_carry_markers():
    diffs = [cdk_diff.StackDiff(f"S{i}", "x" * 25000, changed=1) for i in range(5)]
    diffs.append(cdk_diff.StackDiff("Huge", "y" * 200000, changed=1))
    pages = cdk_diff.comments(diffs, "cdk diff", "note")
    assert len(pages) > 1
    assert all(len(page) <= 65536 for page in pages)
    assert [page.splitlines()[0] for page in pages] == [
        f"<!-- cdk-diff {i} -->" for i in range(1, len(pages) + 1)
    ]
    assert all(f"- {d.summary}" in pages[0] for d in diffs)
    assert sum(page.count("<details>") for page in pages) == 6
    assert "truncated" in pages[-1] or any("truncated" in p for p in pages)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A temporary clone of this repository at HEAD, with this tree's Makefile and diff script and
    its CDK CLI. `--shared` borrows the objects read-only: the developer's repository gains no
    worktree, ref or object, and the clone goes with pytest's tmp folder."""
    cdk = REPO / "node_modules" / ".bin" / "cdk"
    if not cdk.exists():
        pytest.fail("the CDK CLI is not installed: run `npm ci` (make install does)")
    tree = tmp_path_factory.mktemp("make-diff") / "tree"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(REPO), str(tree)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", head], cwd=tree, check=True)
    shutil.copy2(REPO / "Makefile", tree / "Makefile")
    (tree / "scripts").mkdir(exist_ok=True)
    shutil.copy2(REPO / "scripts" / "cdk_diff.py", tree / "scripts" / "cdk_diff.py")
    # A copy, not a link: a make rule may run `npm ci` there, which would empty a linked folder.
    shutil.copytree(REPO / "node_modules", tree / "node_modules", symlinks=True)
    (tree / "node_modules" / ".package-lock.json").touch()
    return tree


def make_diff(tree: Path, *variables: str) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parents[1]
    # -o: treat the install stamps as current; this test must not install anything.
    command = [
        "make",
        "-s",
        "-o",
        f"{venv}/.installed-synth",
        "-o",
        "node_modules/.package-lock.json",
        "diff",
    ]
    return subprocess.run(
        [*command, f"VENV={venv}", "BASE=HEAD", *variables],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_make_diff_shows_a_config_change_and_exits_0(clone):
    dev = clone / "config" / "dev.json"
    config = json.loads(dev.read_text())
    before = config["serverless"]["memory_size_mb"]
    config["serverless"]["memory_size_mb"] = 4096 if before != 4096 else 3072
    dev.write_text(json.dumps(config))
    try:
        result = make_diff(clone, "CONTEXT=env=dev", "FAIL_ON_DESTRUCTIVE=1")
    finally:
        subprocess.run(["git", "checkout", "--", "config"], cwd=clone, check=True)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "======== Detectron2Dev-Serverless: 0 to add, 1 to change (1 replaced), 0 to destroy" in out
    assert f'[-]     "MemorySizeInMB": {before}' in out
    assert f'[+]     "MemorySizeInMB": {config["serverless"]["memory_size_mb"]}' in out
    assert "======== Detectron2Dev-Shared: no resource changes" in out
    assert "DESTRUCTIVE" not in out


@pytest.mark.slow
def test_make_diff_fails_when_the_artifacts_bucket_is_replaced(clone):
    storage = clone / "constructs" / "sagemaker_constructs" / "storage.py"
    source = storage.read_text()
    # A physical name is create-only: CloudFormation replaces the bucket.
    edited = re.sub(
        r'(s3\.Bucket\(\s*self,\s*"Bucket",)', r'\1 bucket_name="detectron2-artifacts-renamed",', source
    )
    assert edited != source, "the artifacts bucket is no longer built as s3.Bucket(self, 'Bucket', ...)"
    storage.write_text(edited)
    try:
        result = make_diff(clone, "FAIL_ON_DESTRUCTIVE=1", f"MARKDOWN_DIR={clone}/md")
    finally:
        subprocess.run(["git", "checkout", "--", "constructs"], cwd=clone, check=True)
    assert result.returncode != 0
    assert re.search(
        r"Detectron2-Shared: .* — DESTRUCTIVE: AWS::S3::Bucket ArtifactsBucket\w+ replace", result.stdout
    )
    assert "destructive changes in Detectron2-Shared" in result.stderr
    comment = (clone / "md" / "comment-1.md").read_text()
    assert comment.startswith("<!-- cdk-diff 1 -->\n### cdk diff against `HEAD`")
    assert "allow-destructive-changes" in comment
