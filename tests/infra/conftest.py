"""Session-wide syntheses of the shipped configurations for the template tests (see tests/synthesis.py)."""

from __future__ import annotations

import pytest

from tests.synthesis import Synth, SynthCache


@pytest.fixture(scope="session")
def synth(shipped: SynthCache) -> Synth:
    """The default configuration, as `make synth` builds it on a fresh clone."""
    return shipped(None)


@pytest.fixture(scope="session")
def prod_synth(shipped: SynthCache) -> Synth:
    """config/prod.json: exercises provisioned concurrency scaling and a second stack prefix."""
    return shipped("prod")
