"""How the test suite runs the notebooks: limits and environment (shared by conftest and test_notebooks;
a module of its own because tests/browser/ has a conftest too, so `from conftest import` is ambiguous)."""
from __future__ import annotations

import os

# Limits inside CI's 90 minutes: a smoke notebook takes minutes (notebook 03: 410 s with its store
# half built, and one cell over 600 s on a cold one, on 2 cores shared at load ~20); a stalled one
# fails after at most CELL_LIMIT_S (one cell) or NOTEBOOK_LIMIT_S (the whole notebook), named with its cell.
CELL_LIMIT_S, NOTEBOOK_LIMIT_S = 900, 1800
# An LLM key or endpoint in the developer's (or CI's) environment would make notebook 03 call out
# (llm_comparison): with no network each call waits its timeout, retried, minutes of idle waiting.
LLM_ENV = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "MONO_AUTOINTERP_BASE_URL", "MONO_AUTOINTERP_MODEL")


def notebook_env(**extra) -> dict:
    """The environment the notebooks run in: this one, minus any LLM key or endpoint."""
    return {**{k: v for k, v in os.environ.items() if k not in LLM_ENV}, **extra}
