"""Features against neurons on every autointerp score: a synthetic lesson and the LLM path.

* :func:`synthetic_demo`: a sparse unit (one token, plus faint activations the explainer
  sees as 0) and a dense unit (many tokens at graded levels), each simulated by the offline
  backend, by a reader's oracle (exactly what the 0-9 display shows) and by a constant;
  every score of :mod:`mono_utils.autointerp.scores` for each. It shows where the scores part.
* :func:`llm_comparison`: the same comparison as the cached offline one, on ``n_units`` units
  per kind with an LLM (``ANTHROPIC_API_KEY``, or any OpenAI-compatible endpoint such as a
  local server), printing calls, tokens and a cost estimate first; without a key or an
  endpoint it prints why it is skipped and returns None.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .protocol import (EvalCorpus, SimulateInput, explain_input, explain_scale, quantise, select_examples,
                         simulate_input)
from .backends import MissingKeyError, build_messages, get_backend
from .offline import OfflineBackend
from .run import detection_seed, sample_units, score_units, unit_seed
from .scores import SCORES, select_detection, unit_scores

BASE_URL_ENV = "MONO_AUTOINTERP_BASE_URL"


# ---------------------------------------------------------------- the synthetic lesson
def synthetic_units(seed: int = 0, rows: int = 600, n_ctx: int = 32, vocab: int = 200):
    """``(corpus, {"sparse": acts, "dense": acts})`` on random tokens.

    sparse: 6-10 on token ``" w7"`` (about 0.5% of tokens) and a faint 0.01-0.2 on 20% of the
    others, below half a step of the 0-9 display; dense: 40% of the vocabulary each at its own
    level (1-10, noise 0.5), so about 40% of tokens active.
    """
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (rows, n_ctx))
    corpus = EvalCorpus(tokens, [f" w{i}" for i in range(vocab)])
    sparse = np.where(tokens == 7, rng.uniform(6, 10, tokens.shape), 0.0)
    faint = (tokens != 7) & (rng.random(tokens.shape) < 0.2)
    sparse = np.where(faint, rng.uniform(0.01, 0.2, tokens.shape), sparse)
    level = np.where(rng.random(vocab) < 0.4, rng.uniform(1, 10, vocab), 0.0)
    dense = np.where(level[tokens] > 0, np.maximum(0.05, level[tokens] + rng.normal(0, 0.5, tokens.shape)), 0.0)
    return corpus, {"sparse": sparse.astype(np.float32), "dense": dense.astype(np.float32)}


def synthetic_demo(seed: int = 0):
    """Every score for a sparse and a dense synthetic unit under three simulators (a DataFrame).

    Simulators: ``offline backend`` (explains from the 49 examples, simulates from its text),
    ``reader's oracle`` (predicts exactly the 0-9 activations a reader of the display would
    see: faint activations as 0), ``constant 0``.
    """
    corpus, units = synthetic_units(seed)
    backend = OfflineBackend()
    rows = []
    for u, (name, acts) in enumerate(units.items()):
        ue = select_examples(acts, corpus, unit_seed(seed, u))
        det = select_detection(acts, corpus, ue, detection_seed(seed, u))
        scale = explain_scale(ue)
        explanation = backend.explain(explain_input(ue, corpus.vocab_strs))
        sims = {
            "offline backend": (backend.simulate(simulate_input(explanation, ue, corpus.vocab_strs)),
                                backend.simulate(SimulateInput(explanation, [e.tokens(corpus.vocab_strs)
                                                                             for e in det]))),
            "reader's oracle": ([quantise(e.acts, scale) for e in ue.simulate], [quantise(e.acts, scale) for e in det]),
            "constant 0": ([np.zeros(len(e.acts)) for e in ue.simulate], [np.zeros(len(e.acts)) for e in det]),
        }
        for sim_name, (pred, dpred) in sims.items():
            s = unit_scores(ue, pred, det, dpred)
            rows.append({"unit": f"{name} (density {float((acts > 0).mean()):.2f})", "simulator": sim_name,
                         **{SCORES[k][0]: round(s[k], 3) for k in SCORES}})
    return pd.DataFrame(rows).set_index(["unit", "simulator"])


# ---------------------------------------------------------------- the LLM path
def _choose_provider(provider, base_url):
    if provider is not None:
        return provider
    if base_url:
        return "openai"
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    if os.environ.get("OPENAI_API_KEY"):
        return "openai"
    return None


def estimate_comparison(sources: dict, units: dict, backend, seed: int = 0, n_samples: int = 2,
                        price_per_mtok: tuple[float, float] = (3.0, 15.0)) -> dict:
    """Calls, tokens (characters / 4) and dollars for scoring ``units`` (``{kind: [unit]}``):
    per unit one explanation, one simulation and one detection simulation (no logit test),
    measured on the real prompts of ``n_samples`` units per kind."""
    per_in, per_out = [], []
    for kind, src in sources.items():
        for u in units[kind][:n_samples]:
            acts = src.unit_acts(u)
            ue = select_examples(acts, src.corpus, unit_seed(seed, u))
            det = select_detection(acts, src.corpus, ue, detection_seed(seed, u))
            ein = explain_input(ue, src.corpus.vocab_strs, src.logit_weights(u))
            sims = [simulate_input("x" * 200, ue, src.corpus.vocab_strs),
                    SimulateInput("x" * 200, [e.tokens(src.corpus.vocab_strs) for e in det])]
            chars = 0
            for task, inp in [("explain", ein)] + [("simulate", s) for s in sims]:
                system, messages = build_messages(task, inp)
                chars += len(system) + sum(len(m["content"]) for m in messages)
            per_in.append(chars / 4)
            per_out.append(300 + sum(4 * sum(len(x) for x in s.examples) + 200 for s in sims))
    n = sum(len(v) for v in units.values())
    tin, tout = float(np.mean(per_in)) * n if per_in else 0.0, float(np.mean(per_out)) * n if per_out else 0.0
    cost = tin / 1e6 * price_per_mtok[0] + tout / 1e6 * price_per_mtok[1]
    return {"units": n, "calls": 3 * n, "input_tokens": int(tin), "output_tokens_max": int(tout), "dollars_max": cost,
            "price_per_mtok": tuple(price_per_mtok), "backend": getattr(backend, "provider", backend.name),
            "model": getattr(backend, "model", "")}


def llm_comparison(sources: dict, n_units: int = 8, *, provider: str | None = None, model: str | None = None,
                   base_url: str | None = None, seed: int = 0, price_per_mtok: tuple[float, float] = (3.0, 15.0),
                   max_dollars: float = 5.0, progress: bool = True, **backend_kw) -> dict | None:
    """Score ``n_units`` live units of every source with an LLM, on every score; ``{kind: DataFrame}``.

    The provider: ``provider`` if given; else an OpenAI-compatible endpoint when ``base_url`` (or
    the variable ``MONO_AUTOINTERP_BASE_URL``) is set (a local server needs no key); else
    Anthropic when ``ANTHROPIC_API_KEY`` is set; else OpenAI when ``OPENAI_API_KEY`` is set.
    With none of these it prints why it is skipped and returns None: nothing is called.

    The estimate (calls, tokens, dollars at ``price_per_mtok`` = (input, output) dollars per
    million tokens, an assumption to set for your model) is printed first; above
    ``max_dollars`` nothing is called. Replies are cached on disk: a rerun costs nothing. The
    logit test is left out (it is not one of the compared scores).
    """
    if n_units < 1:
        raise ValueError(f"n_units must be >= 1, got {n_units}")
    base_url = base_url or os.environ.get(BASE_URL_ENV) or None
    provider = _choose_provider(provider, base_url)
    if provider is None:
        print("LLM comparison skipped: no ANTHROPIC_API_KEY or OPENAI_API_KEY in the environment and no "
              f"OpenAI-compatible endpoint ({BASE_URL_ENV} or base_url=...). Set one before starting Jupyter "
              "to run it; the offline scores above need none.")
        return None
    kw = dict(backend_kw)
    if model:
        kw["model"] = model
    if base_url:
        kw["base_url"] = base_url
        if provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
            kw.setdefault("api_key_env", None)          # a local server that needs no key
    try:
        backend = get_backend(provider, **kw)
    except MissingKeyError as e:
        print(f"LLM comparison skipped: {e}")
        return None
    units = {kind: sample_units(src, n_units, seed) for kind, src in sources.items()}
    est = estimate_comparison(sources, units, backend, seed, price_per_mtok=price_per_mtok)
    print(f"LLM comparison: {n_units} units per kind x {len(units)} kinds with {est['backend']} ({est['model']}): "
          f"{est['calls']} calls, ~{est['input_tokens']:,} input tokens, <= {est['output_tokens_max']:,} output "
          f"tokens; at most about ${est['dollars_max']:.2f} at ${price_per_mtok[0]:g} / ${price_per_mtok[1]:g} per "
          f"million input / output tokens (set price_per_mtok for your model; cached replies cost nothing)")
    if est["dollars_max"] > max_dollars:
        print(f"not run: the estimate is above max_dollars={max_dollars:g}; lower n_units or raise max_dollars")
        return None
    return {kind: score_units(src, units[kind], backend, seed=seed, logits=False, progress=progress, verbose=False)
            for kind, src in sources.items()}
