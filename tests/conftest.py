"""Fixtures and markers every test folder shares."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`needs_torch` tests are skipped, saying why, where torch is not installed (`make test-infra`
    also deselects them, so the CDK side tests with the synth requirements alone)."""
    if importlib.util.find_spec("torch") is not None:
        return
    skip = pytest.mark.skip(reason="torch is not installed (make install installs it)")
    for item in items:
        if "needs_torch" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shipped(tmp_path_factory: pytest.TempPathFactory):
    """`shipped(env)`: the app synthesized with config/<env>.json (None: the default), once per
    session whoever asks. Imported here, not at the top: only tests that synthesize start jsii."""
    from tests.synthesis import SynthCache

    return SynthCache(tmp_path_factory)
