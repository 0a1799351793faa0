"""Loading a configuration written for one test, and expecting its one-line problems."""

import json
import re
from pathlib import Path

import pytest

from sagemaker_constructs.settings import AppConfig, ConfigError, load_config


def load(tmp_path: Path, overrides: dict | None = None, *, model_data: str | None = None) -> AppConfig:
    """GIVEN `overrides` as config/test.json WHEN the app loads `-c env=test` (and model_data)."""
    (tmp_path / "test.json").write_text(json.dumps(overrides or {}))
    return load_config(env="test", model_data=model_data, config_dir=tmp_path, base_dir=tmp_path)


def problem(tmp_path: Path, overrides: dict, message: str) -> None:
    """THEN synthesis stops with `message` as one of the listed problems."""
    with pytest.raises(ConfigError, match=f"\n  - {re.escape(message)}(\n|$)"):
        load(tmp_path, overrides)
