"""Synthesizing the CDK app in this process, as app.py does: shared by the infra and client tests.

`SynthCache` keeps one synthesis per shipped configuration for the whole session (the `shipped`
fixture in tests/conftest.py); synth output goes to pytest's tmp dirs, never into the repo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.scripts import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]


# Loaded before anything imports aws_cdk: app.py is the one place that silences jsii's Node 20 banner.
cdk_app = load_script("cdk_app", REPO_ROOT / "app.py")

import aws_cdk as cdk  # noqa: E402
from aws_cdk import cx_api  # noqa: E402

from stacks import InferenceStacks  # noqa: E402

# Every config/<env>.json the repository ships, as the "available" list names them.
SHIPPED_ENVIRONMENTS = sorted(path.stem for path in (REPO_ROOT / "config").glob("*.json"))


def cdk_json_context() -> dict:
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


@dataclass
class Synth:
    stacks: InferenceStacks
    assembly: cx_api.CloudAssembly
    outdir: Path
    _templates: dict[str, dict] = field(default_factory=dict, repr=False)

    def stack_name(self, key: str) -> str:
        stack = self.stacks.shared if key == "shared" else self.stacks.modes[key]
        return stack.stack_name

    def template(self, key: str) -> dict:
        """The template as written to the cloud assembly (read once; do not mutate)."""
        if key not in self._templates:
            path = self.outdir / f"{self.stack_name(key)}.template.json"
            self._templates[key] = json.loads(path.read_text())
        return self._templates[key]

    def resources(self, key: str, resource_type: str) -> dict[str, dict]:
        return {
            logical_id: resource
            for logical_id, resource in self.template(key)["Resources"].items()
            if resource["Type"] == resource_type
        }

    def only(self, key: str, resource_type: str) -> tuple[str, dict]:
        found = self.resources(key, resource_type)
        assert len(found) == 1, f"{key}: expected one {resource_type}, found {sorted(found)}"
        return next(iter(found.items()))


def build(outdir: Path, config_dir: Path = cdk_app.CONFIG_DIR, **context: str):
    """Build the app exactly as app.py does (config, stacks, cdk-nag), with cdk.json's context."""
    app = cdk.App(context={**cdk_json_context(), **context}, outdir=str(outdir), stack_traces=False)
    return app, cdk_app.build_app(app, config_dir=config_dir)


def synthesize(outdir: Path, config_dir: Path = cdk_app.CONFIG_DIR, **context: str) -> Synth:
    app, stacks = build(outdir, config_dir, **context)
    return Synth(stacks, app.synth(), outdir)


def synthesize_config(outdir: Path, overrides: dict) -> Synth:
    """Synthesize with `overrides` as the environment file (`-c env=test`), e.g. a changed pin."""
    config_dir = outdir.parent / f"{outdir.name}-config"
    config_dir.mkdir(parents=True)
    (config_dir / "test.json").write_text(json.dumps(overrides))
    return synthesize(outdir, config_dir, env="test")


def cdk_diff(before: Synth, after: Synth, stack_name: str) -> tuple[int, str]:
    """`cdk diff` of `after`'s stack against `before`'s template: offline, what a pull request shows.

    Returns (exit status, output); `--fail` makes the status 1 when there is a difference."""
    result = subprocess.run(
        [
            shutil.which("npx") or "npx",
            "--no-install",
            "cdk",
            "diff",
            "--app",
            str(after.outdir),
            "--exclusively",
            "--template",
            str(before.outdir / f"{stack_name}.template.json"),
            "--fail",
            stack_name,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result.returncode, result.stdout + result.stderr


needs_cdk_cli = pytest.mark.skipif(
    not (REPO_ROOT / "node_modules" / ".bin" / "cdk").exists(), reason="the CDK CLI is not installed: npm ci"
)


class SynthCache:
    """One synthesis per shipped configuration (None: the default, as `make synth` builds it),
    made on first use and shared by every test that reads it (do not mutate what it returns)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._synths: dict[str | None, Synth] = {}

    def __call__(self, env: str | None = None) -> Synth:
        if env is not None and env not in SHIPPED_ENVIRONMENTS:
            raise ValueError(f"no config/{env}.json; shipped: {', '.join(SHIPPED_ENVIRONMENTS)}")
        if env not in self._synths:
            outdir = self._tmp_path_factory.mktemp(f"cdk.out.{env or 'default'}")
            self._synths[env] = synthesize(outdir, env=env) if env else synthesize(outdir)
        return self._synths[env]


def redact_image_hashes(synth: Synth, template: dict) -> dict:
    """Image tags change with every container edit (reviewed as code); nothing else is redacted."""
    text = json.dumps(template)
    for target, image in (("gpu", synth.stacks.shared.images.gpu), ("cpu", synth.stacks.shared.images.cpu)):
        text = text.replace(image.asset_hash, f"<{target}-image-asset-hash>")
    return json.loads(text)


def acknowledgements(outdir: Path) -> dict[str, str]:
    """`<construct path> <rule>` -> reason, for every cdk-nag suppression in the cloud assembly."""
    found = {}
    for metadata_file in outdir.glob("*.metadata.json"):
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.update({f"{path} {rule}": reason for rule, reason in entry["data"].items()})
    return found
