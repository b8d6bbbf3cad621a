"""Fixtures of the circuits tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny(smoke_preset):
    """Smoke with a small transcoder (128 features, 32k activations): one artifact for every circuits test."""
    return smoke_preset.replace(sae_main=128, sae_tokens=32_768, sae_batch=256, eval_tokens=4_096,
                                density_tokens=8_192)
