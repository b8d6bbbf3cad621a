"""Shared fixtures: a tiny random model (instant) and smoke-preset artifacts (built once per run).

Set ``MONO_TEST_ARTIFACTS=/some/dir`` to reuse the smoke artifacts across pytest runs while
developing; CI builds them fresh in a temporary folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from _notebook_runs import CELL_LIMIT_S, NOTEBOOK_LIMIT_S, notebook_env   # tests/ is on sys.path

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


@pytest.fixture(scope="session")
def executed_notebooks(smoke_store, tmp_path_factory):
    """``run(path) -> (result, executed copy)``: each notebook executed on smoke once per session.

    tests/test_notebooks.py checks the run; the HTML export test (tests/browser/) reads the same copy:
    executing every notebook twice cost the suite about as long again. ``MONO_TEST_EXECUTED=/some/dir``
    keeps the copies there across runs while developing (a copy already there is reused, unchecked)."""
    from mono_utils.notebooks import execute_notebook
    reuse = os.environ.get("MONO_TEST_EXECUTED")
    folder = Path(reuse) if reuse else tmp_path_factory.mktemp("executed")
    folder.mkdir(parents=True, exist_ok=True)
    env = notebook_env(MONO_PRESET="smoke", MONO_ARTIFACTS=str(smoke_store.root),
                       MONO_RATINGS_DIR=str(tmp_path_factory.mktemp("ratings")))
    runs: dict = {}

    def run(path: Path):
        path = Path(path)
        if path.name not in runs:
            out = folder / path.name
            if reuse and out.exists():
                runs[path.name] = ({"ok": True, "log": "(reused)", "seconds": 0.0, "peak_mb": 0.0}, out)
            else:
                r = execute_notebook(path, out, preset="smoke", env=env, timeout=CELL_LIMIT_S,
                                     total_timeout=NOTEBOOK_LIMIT_S)
                runs[path.name] = (r, out)
        return runs[path.name]
    return run



@pytest.fixture(scope="module")
def tiny(smoke_preset):
    """Smoke's models with small SAEs (128 features on 32k activations) and a small evaluation: the preset of
    the pipeline, evaluation and circuits tests, so that each of its artifacts is built once per store."""
    return smoke_preset.replace(sae_main=128, sae_tokens=32_768, sae_batch=256, eval_tokens=4_096,
                                density_tokens=8_192)
