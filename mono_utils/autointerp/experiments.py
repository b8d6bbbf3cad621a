"""Experiments on the offline backend: how far token statistics can go (``lookup_ceiling``,
``ceiling_table``) and what an explanation limited to k tokens scores (``budget_curve``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .offline import OfflineBackend
from .protocol import explain_scale, quantise, score_simulation, select_examples
from .run import sample_units, score_units, unit_seed


def lookup_ceiling(source, units, seed: int = 0, labels: np.ndarray | None = None) -> dict:
    """How far any token-lookup simulator could go: the protocol's held-out examples and scores,
    with the simulator replaced by an *oracle* that predicts the unit's mean activation on each
    token (``"token"``), on each (previous, current) token pair (``"pair"``), or on each token
    within each text label (``"label_token"``: the corpus subdomain, as if the simulator knew
    what kind of text it reads), over the whole evaluation set. The activations averaged are the
    ones the headline score compares: on the 0-9 scale the explainer saw (``quantise`` against
    ``explain_scale``; ``autointerp.scores``), so faint activations a reader sees as 0 do not
    leak into the oracle. The oracle reads the test rows' statistics: a ceiling, never a method.

    Returns ``{"unit", "token", "pair", "label_token", "single_token"}`` arrays (importance-weighted
    Spearman; ``label_token`` is NaN without labels). ``source``: an ``autointerp_run.IndexSource``
    (its index's subdomain labels are used) or anything with ``unit_acts`` and ``corpus``;
    ``labels``: per-token int labels shaped like the corpus tokens, to use other labels.
    """
    toks = np.asarray(source.corpus.tokens)
    flat_t = toks.reshape(-1).astype(np.int64)
    vocab = int(flat_t.max()) + 1
    # each row starts a new context: position 0 has no previous token (key -1 -> its own pairs)
    prev = np.concatenate([[-1], flat_t[:-1]])
    prev[:: toks.shape[1]] = -1
    _, inv = np.unique((prev + 1) * vocab + flat_t, return_inverse=True)
    if labels is None:
        labels = getattr(getattr(source, "index", None), "subdomain", None)
    lab_inv = None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if labels.size != flat_t.size:
            raise ValueError(f"labels hold {labels.size} values for {flat_t.size} tokens: give one label per token")
        _, lab_inv = np.unique(labels * vocab + flat_t, return_inverse=True)
    tok_n = np.maximum(np.bincount(flat_t, minlength=vocab), 1)
    pair_n = np.bincount(inv)
    lab_n = None if lab_inv is None else np.bincount(lab_inv)
    out = {"unit": [], "token": [], "pair": [], "label_token": [], "single_token": []}
    for u in units:
        acts = np.asarray(source.unit_acts(u))
        ue = select_examples(acts, source.corpus, unit_seed(seed, u))
        flat_a = quantise(acts.reshape(-1), explain_scale(ue)).astype(np.float64)
        means = {"token": (flat_t, np.bincount(flat_t, flat_a, vocab) / tok_n),
                 "pair": (inv, np.bincount(inv, flat_a) / pair_n)}
        if lab_inv is not None:
            means["label_token"] = (lab_inv, np.bincount(lab_inv, flat_a) / lab_n)
        where = [e.row * toks.shape[1] + e.start + np.arange(len(e.token_ids)) for e in ue.simulate]
        out["unit"].append(int(u))
        for key in ("token", "pair", "label_token"):
            if key in means:
                key_of, mean = means[key]
                out[key].append(score_simulation(ue, [mean[key_of[pos]] for pos in where])["spearman"])
            else:
                out[key].append(float("nan"))
        out["single_token"].append(bool(ue.single_token))
    return {k: np.asarray(v) for k, v in out.items()}


def ceiling_table(sources: dict, results: dict, n_units: int = 40, seed: int = 1, kinds=("feature", "neuron")):
    """Median offline score against the lookup ceiling, per kind: a DataFrame (notebook 03, the
    benchmark). ``results``: scored units per kind (``get_offline_scores``); ``n_units`` of the
    scored ones are drawn at random (``seed``) and given to :func:`lookup_ceiling`."""
    rows = []
    for kind in kinds:
        ok = results[kind][results[kind].status == "ok"]
        if ok.empty:
            raise ValueError(f"no scored {kind} units: score some first (get_offline_scores)")
        units = sorted(np.random.default_rng(seed).choice(ok.unit.to_numpy(), size=min(n_units, len(ok)),
                                                          replace=False).tolist())
        ceiling = lookup_ceiling(sources[kind], units, seed=0)
        rows.append({"units": f"{kind}s ({len(units)} at random)",
                     "offline backend": float(ok.set_index("unit").loc[units, "spearman"].median()),
                     "oracle: mean per token": float(np.median(ceiling["token"])),
                     "oracle: mean per (previous, current) pair": float(np.median(ceiling["pair"])),
                     "oracle: mean per (text label, token)": float(np.median(ceiling["label_token"]))})
    return pd.DataFrame(rows).set_index("units")


def budget_curve(sources: dict, budgets=(1, 2, 3, 5, 10, 30), n_units: int | None = 200, seed: int = 0,
                 progress: bool = True):
    """Median Spearman per kind when the explanation may name only ``k`` tokens and nothing else.

    The paper's explainer had to be succinct; this is the offline stand-in: ``OfflineBackend``
    with ``max_tokens=k`` and no preceding-token or token-class entries, on ``n_units`` live
    units per kind (the same sample for every budget). A DataFrame: one row per (budget, kind),
    with the median over all scored units and over the multi-token ones.
    """
    if not budgets or any(int(k) < 1 for k in budgets):
        raise ValueError(f"budgets must be token counts >= 1, got {budgets!r}")
    units = {kind: sample_units(src, n_units, seed) for kind, src in sources.items()}
    rows = []
    for k in tqdm(budgets, desc="explanation budgets", disable=not progress):
        backend = OfflineBackend(max_tokens=int(k), max_after=0, max_classes=0)
        for kind, src in sources.items():
            df = score_units(src, units[kind], backend, seed=seed, logits=False, progress=False, verbose=False,
                             detection=False)
            ok = df[df.status == "ok"]
            multi = ok[~ok.single_token]
            rows.append({"tokens named": int(k), "kind": kind, "scored": len(ok),
                         "median": float(ok.spearman.median()) if len(ok) else float("nan"),
                         "median, multi-token": float(multi.spearman.median()) if len(multi) else float("nan")})
    return pd.DataFrame(rows)
