#!/usr/bin/env python3
"""CDK diff per stack, offline against another git revision or online against the deployed stacks.

    python scripts/cdk_diff.py --base main                  # what `make diff` runs
    python scripts/cdk_diff.py --deployed                   # needs AWS credentials (the PR workflow)
    python scripts/cdk_diff.py --base main --fail-on-destructive --markdown-dir out/

Offline: BASE's files are exported (`git archive`) into a temporary folder, so the repository
gains no worktree or ref; both trees are synthesized with the same CDK CLI and context, each with
its own code, and each stack is compared with
`cdk diff --app <new cdk.out> --template <base template> --exclusively STACK`.

Destructive changes are read from what the CDK CLI itself prints for each resource (its
cloudformation-diff library knows which property changes replace a resource): a stateful resource
whose line ends in `replace`, `may be replaced`, `destroy` or `orphan`, or that is removed, or whose
whole stack is gone. Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What holds data or identity a replacement would lose: objects, keys, registered model versions,
# the endpoints callers use.
STATEFUL_TYPES = {
    "AWS::S3::Bucket",
    "AWS::KMS::Key",
    "AWS::SageMaker::ModelPackage",
    "AWS::SageMaker::ModelPackageGroup",
    "AWS::SageMaker::Endpoint",
}
DESTRUCTIVE_IMPACTS = ("may be replaced", "replace", "destroy", "orphan")
# Replacing these keeps the old resource (UpdateReplacePolicy Retain, asserted by the registry's
# tests): a new model package is how a new model or image is registered, and the old version stays
# in the group, deployable. Removing one from the app still counts as destructive.
KEPT_ON_REPLACEMENT = {"AWS::SageMaker::ModelPackage"}
RESOURCE_LINE = re.compile(r"^\[(?P<op>[-+~])\] (?P<type>AWS::\S+|Custom::\S+) (?P<rest>.*)$")
# GitHub rejects comments over 65536 characters; leave room for the marker and the header.
COMMENT_LIMIT = 60000
MARKER = "<!-- cdk-diff {index} -->"


@dataclass
class StackDiff:
    name: str
    text: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    replaced: int = 0
    destructive: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if not (self.added or self.changed or self.removed):
            return f"{self.name}: no resource changes" + (" (other differences below)" if self.text else "")
        parts = [f"{self.added} to add", f"{self.changed} to change", f"{self.removed} to destroy"]
        if self.replaced:
            parts[1] += f" ({self.replaced} replaced)"
        line = f"{self.name}: " + ", ".join(parts)
        if self.destructive:
            line += f" — DESTRUCTIVE: {'; '.join(self.destructive)}"
        return line


def parse(name: str, text: str) -> StackDiff:
    """Count the CLI's resource lines and collect the stateful ones it will replace or remove."""
    diff = StackDiff(name, text)
    for line in text.splitlines():
        match = RESOURCE_LINE.match(line.rstrip())
        if not match:
            continue
        op, resource_type, rest = match["op"], match["type"], match["rest"]
        impact = next((i for i in DESTRUCTIVE_IMPACTS if rest.endswith(" " + i)), None)
        if op == "+":
            diff.added += 1
        elif op == "-":
            diff.removed += 1
        else:
            diff.changed += 1
            diff.replaced += impact in ("replace", "may be replaced")
        kept = op == "~" and resource_type in KEPT_ON_REPLACEMENT
        if resource_type in STATEFUL_TYPES and (op == "-" or impact) and not kept:
            logical_id = rest.removesuffix(" " + impact).split()[-1] if impact else rest.split()[-1]
            diff.destructive.append(f"{resource_type} {logical_id} {impact or 'destroy'}")
    return diff


def removed_stack(name: str, template: dict) -> StackDiff:
    """A stack in BASE that the new tree no longer synthesizes: deploying would delete all of it."""
    resources = template.get("Resources", {})
    text = "\n".join(f"[-] {r['Type']} {logical_id} destroy" for logical_id, r in sorted(resources.items()))
    diff = parse(name, f"Stack {name} (removed from the app)\n{text}")
    return diff


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def export_tree(revision: str, into: Path, env: dict[str, str]) -> None:
    """The files of `revision` in `into`, from `git archive`: nothing is written to the repository."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=REPO, env=env, capture_output=True
    )
    if archive.returncode != 0:
        sys.exit(f"error: cannot check out {revision}: {archive.stderr.decode(errors='replace').strip()}")
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")


def tree_env(tree: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` for synthesizing `tree` with its own code: the venv's editable install of the app points at
    one checkout, and the other tree's `stacks`/`sagemaker_constructs` must win over it."""
    own = [str(tree), str(tree / "constructs"), str(tree / "client" / "src")]
    return {**env, "PYTHONPATH": os.pathsep.join([*own, *filter(None, [env.get("PYTHONPATH")])])}


def synth(cdk: str, tree: Path, out: Path, context: list[str], env: dict[str, str]) -> dict[str, Path]:
    """Synthesize `tree` into `out`; its stacks' template files by stack name."""
    result = run([cdk, "synth", "--quiet", "--output", str(out), *context], tree, tree_env(tree, env))
    if result.returncode != 0:
        sys.exit(f"error: cdk synth failed in {tree}:\n{result.stdout}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        artifact.get("displayName", name): out / artifact["properties"]["templateFile"]
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    }


def cdk_diff(cdk: str, app: Path, stack: str, template: Path | None, env: dict[str, str]) -> str:
    command = [cdk, "diff", "--app", str(app), "--exclusively", "--no-color", stack]
    if template is not None:
        command[2:2] = ["--template", str(template)]
    result = run(command, REPO, env)
    # cdk diff exits 0 (no difference) or 1 (differences, with --fail) — anything else is a failure.
    if result.returncode not in (0, 1):
        sys.exit(f"error: cdk diff {stack} failed:\n{result.stdout}")
    kept = [
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("✨", "Including dependency stacks", "start:", "success:"))
    ]
    return "\n".join(kept).strip()


def comments(diffs: list[StackDiff], title: str, destructive_note: str) -> list[str]:
    """Markdown bodies, each under GitHub's comment limit: a summary, then one <details> per stack."""
    header = [f"### {title}", ""]
    header += [f"- {'⚠️ ' if d.destructive else ''}{d.summary}" for d in diffs]
    if any(d.destructive for d in diffs):
        header += ["", destructive_note]
    blocks = []
    for d in diffs:
        if not d.text:
            continue
        body = d.text
        budget = COMMENT_LIMIT - 500
        if len(body) > budget:
            body = body[:budget] + "\n… truncated: the full diff is in the job log and the cdk-diff artifact"
        blocks.append(f"<details><summary>{d.name}</summary>\n\n```diff\n{body}\n```\n\n</details>")
    pages = ["\n".join(header)]
    for block in blocks:
        if len(pages[-1]) + len(block) + 2 > COMMENT_LIMIT:
            pages.append(f"### {title} (continued)")
        pages[-1] += "\n\n" + block
    return [MARKER.format(index=i + 1) + "\n" + page for i, page in enumerate(pages)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--base", help="git revision to compare with (synthesized from its exported files)")
    where.add_argument(
        "--deployed", action="store_true", help="compare with the deployed stacks (AWS credentials)"
    )
    parser.add_argument(
        "--context", action="append", default=[], help="KEY=VALUE, for both synths (repeatable)"
    )
    parser.add_argument("--fail-on-destructive", action="store_true", help="exit 3 on a destructive change")
    parser.add_argument("--markdown-dir", type=Path, help="write PR comment bodies here (comment-1.md, ...)")
    parser.add_argument("--cdk", default=str(REPO / "node_modules" / ".bin" / "cdk"), help="CDK CLI to run")
    args = parser.parse_args(argv)

    env = dict(os.environ, JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20", FORCE_COLOR="0", CI="true")
    context = [item for pair in args.context for item in ("--context", pair)]
    with tempfile.TemporaryDirectory(prefix="cdk-diff-") as scratch:
        scratch_dir = Path(scratch)
        new_templates = synth(args.cdk, REPO, scratch_dir / "new.out", context, env)
        diffs: list[StackDiff] = []
        if args.deployed:
            title = "cdk diff against the deployed stacks"
            for stack in new_templates:
                diffs.append(parse(stack, cdk_diff(args.cdk, scratch_dir / "new.out", stack, None, env)))
        else:
            base_sha = run(["git", "rev-parse", "--short", args.base], REPO, env).stdout.strip()
            title = f"cdk diff against `{args.base}` ({base_sha}), synthesized offline"
            base_tree = scratch_dir / "base"
            export_tree(args.base, base_tree, env)
            base_templates = synth(args.cdk, base_tree, scratch_dir / "base.out", context, env)
            empty = scratch_dir / "empty.template.json"
            empty.write_text("{}")
            for stack, template in new_templates.items():
                base = base_templates.get(stack)
                if base is not None and json.loads(base.read_text()) == json.loads(template.read_text()):
                    diffs.append(StackDiff(stack, ""))  # identical: skip a CLI start
                    continue
                diffs.append(
                    parse(stack, cdk_diff(args.cdk, scratch_dir / "new.out", stack, base or empty, env))
                )
            for stack in sorted(set(base_templates) - set(new_templates)):
                diffs.append(removed_stack(stack, json.loads(base_templates[stack].read_text())))

    for d in diffs:
        print(f"{'=' * 8} {d.summary}")
        if d.text:
            print(d.text)
        print()
    destructive = [d for d in diffs if d.destructive]
    note = (
        "A stateful resource (bucket, key, model package, endpoint) would be replaced or destroyed. "
        "If that is intended, add the `allow-destructive-changes` label to the pull request."
    )
    if args.markdown_dir:
        args.markdown_dir.mkdir(parents=True, exist_ok=True)
        for old in args.markdown_dir.glob("comment-*.md"):
            old.unlink()
        for i, page in enumerate(comments(diffs, title, note), start=1):
            (args.markdown_dir / f"comment-{i}.md").write_text(page)
    if destructive:
        print(f"destructive changes in {', '.join(d.name for d in destructive)}", file=sys.stderr)
        if args.fail_on_destructive:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
