"""Shared fixtures: a tiny random model (instant) and smoke-preset artifacts (built once per run).

Set ``MONO_TEST_ARTIFACTS=/some/dir`` to reuse the smoke artifacts across pytest runs while
developing; CI builds them fresh in a temporary folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    from mono_utils.store.artifacts import ArtifactStore
    root = os.environ.get("MONO_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts")
    return ArtifactStore(Path(root))


@pytest.fixture(scope="session")
def smoke_preset():
    from mono_utils.pipeline.presets import get_preset
    return get_preset("smoke")


@pytest.fixture(scope="session")
def smoke_tokens(smoke_preset, smoke_store):
    from mono_utils.pipeline import models as pipeline
    return pipeline.get_tokens(smoke_preset, smoke_store)


@pytest.fixture(scope="session")
def smoke_tokenizer(smoke_preset, smoke_store):
    from mono_utils.pipeline import models as pipeline
    return pipeline.get_tokenizer(smoke_preset, smoke_store)


@pytest.fixture(scope="session")
def smoke_model(smoke_preset, smoke_store):
    from mono_utils.pipeline import models as pipeline
    return pipeline.get_model(smoke_preset, smoke_store, which="A", progress=False)


@pytest.fixture()
def tiny_model():
    """A random 1-layer model: d_vocab 64, d_model 32, 2 heads, d_mlp 64, n_ctx 16."""
    from mono_utils.core.model import ModelConfig, build_model
    return build_model(ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0))
