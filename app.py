#!/usr/bin/env python3
"""CDK entry point: load the configuration, build the stacks, check them with cdk-nag."""

import os
import sys
from pathlib import Path

# jsii prints a Node 20 end-of-life banner on every start; the CDK still supports Node 20. Set here
# too so `npx cdk ...` run outside make stays quiet.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# E402 below: these imports start jsii, so they must follow the setdefault above. `stacks` and
# `sagemaker_constructs` come from this repository's package (pyproject.toml), installed editable by
# `make install` / `make install-synth`.
import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from sagemaker_constructs.settings import ConfigError, load_config  # noqa: E402
from stacks import InferenceStacks, build_stacks  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent
CONFIG_DIR = REPO_ROOT / "config"
CONTAINER_DIR = REPO_ROOT / "container"


def build_app(app: cdk.App, *, config_dir: Path = CONFIG_DIR) -> InferenceStacks:
    """Context: `env` selects <config_dir>/<env>.json, `model_data` overrides model.data."""
    config = load_config(
        env=app.node.try_get_context("env"),
        model_data=app.node.try_get_context("model_data"),
        config_dir=config_dir,
        base_dir=REPO_ROOT,
    )
    stacks = build_stacks(app, config, container_dir=CONTAINER_DIR)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stacks


def main() -> None:
    app = cdk.App()
    try:
        build_app(app)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    app.synth()


if __name__ == "__main__":
    main()
