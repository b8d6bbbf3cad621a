"""Autointerp scores side by side: what the paper's scoring specifies, what it leaves open.

**What the paper specifies** (*Towards Monosemanticity*, appendix on automated
interpretability; ``shared/reference/paper.md``):

* the explainer sees 49 examples with activations **quantised to 0-9** (plus logits);
* the simulator, in a fresh conversation, predicts the activations of 60 held-out
  9-token examples (540 predictions): 6 top, 2 from each of 12 intervals, 10 random,
  20 top tokens in other contexts, shuffled and unlabelled;
* the score is the **Spearman** correlation between predicted and true activations,
  **importance-weighted** so that the over-sampling of high intervals does not bias it;
  a constant prediction scores 0.

**What it leaves open**, and the reading this project takes (each one a choice):

1. *The scale of the true activations.* The paper says "true activations" and never says
   whether they enter the correlation raw or on the 0-9 scale the explainer was shown.
   With Pearson (Bills et al. 2023, whose code correlates raw activations) the two hardly
   differ; with Spearman they do, because ranks make a faint 0.01 outrank every 0: for a
   sparse unit most active tokens are faint activations far below the top, which the
   explainer saw as 0 and no simulator predicts. **The headline score (``"spearman"``)
   compares the truth on the 0-9 scale the explainer saw** (``quantise`` against the largest
   activation in the explanation examples), because that is what an explanation formed
   from those examples can speak about. The same score on raw activations
   (``"spearman_raw"``) is the project's headline until 2026-11-30 and stays beside it.
2. *The unit of the importance weights.* Per example by its sampling probability, or per
   stratum. Here: **per stratum, post-stratified** over the held-out rows (interval of the
   row's maximum, "silent", "top", each with or without a top token), each sampled example
   weighted by its stratum's population over its sample count, every token of an example
   carrying its example's weight (``autointerp.select_examples``).
3. *Ties.* Spearman on weighted **mid-ranks** (a tie block shares the middle of its
   cumulative weight), so the many zeros tie with each other and not at random.
4. *Which contexts count as active* (only for the detection score below, which the paper
   does not have): a context is active when the reader would see it active, i.e. its
   maximum quantises to >= 1 on the explainer's 0-9 scale.

**The scores** (``SCORES``), each a number per unit, computed from one explanation:

* ``spearman``: importance-weighted Spearman, truth on the 0-9 scale (the headline);
* ``spearman_raw``: importance-weighted Spearman on raw activations;
* ``spearman_unweighted``: plain Spearman on raw activations;
* ``pearson``: plain Pearson on raw activations (Bills et al. 2023);
* ``detection``: a density-independent score after EleutherAI's delphi: on a separate set
  of held-out contexts (activating ones sampled across the quantiles of the unit's visible
  activations; non-activating random contexts and contexts holding the unit's top tokens),
  each context is called active when the simulator's largest prediction in it is at least
  0.5 (rounds to >= 1 on the 0-9 scale); the score is the balanced accuracy
  (true-positive rate + true-negative rate) / 2, chance 0.5.

Per kind, :func:`median_ci` gives the median with a seeded bootstrap 95% interval, and
:func:`score_table` puts every score of every kind in one table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .protocol import (EvalCorpus, Example, ParseFailure, UnitExamples, _make, _window, explain_scale, quantise,
                         score_simulation)

HEADLINE = "spearman"
# score -> (short label, what it is, where it comes from)
SCORES = {
    "spearman": ("Spearman, weighted, 0-9 truth", "importance-weighted Spearman against the true activations on "
                 "the 0-9 scale the explainer saw", "the paper (scale: this project's reading; the headline)"),
    "spearman_raw": ("Spearman, weighted, raw truth", "importance-weighted Spearman against the raw activations",
                     "the paper (scale: literal; the headline until 2026-11-30)"),
    "spearman_unweighted": ("Spearman, unweighted", "plain Spearman against the raw activations", "a variant"),
    "pearson": ("Pearson", "plain Pearson against the raw activations", "Bills et al. 2023"),
    "detection": ("detection (balanced accuracy)", "active / not active per held-out context, balanced accuracy",
                  "EleutherAI delphi (density-independent; chance 0.5)"),
}


# ---------------------------------------------------------------- detection
@dataclass(frozen=True)
class DetectionConfig:
    """Held-out contexts for the detection score (all from rows no other example used)."""
    n_quantiles: int = 10          # equal-count bins of the visible active rows' maxima
    per_quantile: int = 2          # 20 activating contexts
    n_random: int = 10             # random contexts the reader sees as silent
    n_top_token: int = 10          # contexts holding a top token, the reader sees as silent
    window: tuple[int, int] = (6, 2)   # 9 tokens, as the simulation examples
    threshold: float = 0.5         # a prediction >= 0.5 rounds to >= 1 on the 0-9 scale: "active"


def select_detection(acts: np.ndarray, corpus: EvalCorpus, ue: UnitExamples, seed: int = 0,
                     cfg: DetectionConfig = DetectionConfig()) -> list[Example]:
    """Held-out contexts for the detection score, shuffled; ``source`` says which kind each is.

    Rows used by ``ue`` (explanation or simulation) are never used; each row gives at most
    one context. Activating contexts (``source`` ``"quantile k"``) are centred on their row's
    maximum, sampled ``per_quantile`` from each of ``n_quantiles`` equal-count bins of the
    visible rows' maxima; non-activating ones are random windows (``"random"``) and windows
    centred on a top token (``"top-token"``) whose every activation quantises to 0.
    """
    acts = np.asarray(acts, np.float32)
    tokens = corpus.tokens
    if acts.shape != tokens.shape:
        raise ValueError(f"activations have shape {acts.shape} but tokens {tokens.shape}: pass the unit's "
                         f"activation on every token of the evaluation set")
    rng = np.random.default_rng(seed)
    rows, n_ctx = acts.shape
    scale = explain_scale(ue)
    used = np.zeros(rows, bool)
    used[list(ue.explain_rows | ue.simulate_rows)] = True
    row_max = acts.max(1)
    visible = quantise(row_max, scale) >= 1
    out: list[Example] = []

    # activating contexts across quantiles of the visible rows' maxima
    cand = np.flatnonzero(visible & ~used)
    cand = cand[np.lexsort((cand, row_max[cand]))]
    bins = np.array_split(cand, min(cfg.n_quantiles, len(cand))) if len(cand) else []
    for k, members in enumerate(bins):
        for r in rng.choice(members, size=min(cfg.per_quantile, len(members)), replace=False):
            out.append(_make(acts, tokens, r, int(acts[r].argmax()), cfg.window, f"quantile {k + 1}/{len(bins)}"))
            used[r] = True

    def silent(r, centre) -> bool:
        s, e = _window(centre, n_ctx, *cfg.window)
        return bool(quantise(acts[r, s:e].max(), scale) == 0)

    # random contexts the reader sees as silent (a bounded number of tries for dense units)
    free = np.flatnonzero(~used)
    taken = 0
    for r in rng.permutation(free)[: 20 * cfg.n_random]:
        if taken >= cfg.n_random:
            break
        p = int(rng.integers(n_ctx))
        if silent(r, p):
            out.append(_make(acts, tokens, r, p, cfg.window, "random"))
            used[r] = True
            taken += 1
    # the unit's top tokens in contexts where it stays silent
    occ = (np.concatenate([corpus.positions_of(t) for t in ue.top_token_ids]) if ue.top_token_ids
           else np.zeros(0, np.int64))
    taken = 0
    for flat in rng.permutation(occ)[: 50 * cfg.n_top_token]:
        if taken >= cfg.n_top_token:
            break
        r, p = divmod(int(flat), n_ctx)
        if not used[r] and silent(r, p):
            out.append(_make(acts, tokens, r, p, cfg.window, "top-token"))
            used[r] = True
            taken += 1
    return [out[i] for i in rng.permutation(len(out))]


def detection_labels(examples: list[Example], scale: float) -> np.ndarray:
    """True where the reader would see the context active (its maximum quantises to >= 1)."""
    return np.array([quantise(e.acts.max(), scale) >= 1 for e in examples], bool)


def detection_score(examples: list[Example], predictions: list, scale: float,
                    threshold: float = DetectionConfig.threshold) -> dict:
    """Balanced accuracy of "active or not" per context, from the simulator's predictions.

    ``{"detection", "detection_tpr", "detection_tnr", "detection_pos", "detection_neg"}``;
    the scores are NaN when either class is empty (a unit too dense for silent contexts).
    """
    if len(predictions) != len(examples):
        raise ParseFailure(f"{len(predictions)} predicted examples for {len(examples)} detection contexts")
    truth = detection_labels(examples, scale)
    called = []
    for e, p in zip(examples, predictions):
        p = np.asarray(p, np.float64)
        if p.shape != e.acts.shape:
            raise ParseFailure(f"a detection context of {len(e.acts)} tokens got {p.size} predictions")
        called.append(bool(p.size and p.max() >= threshold))
    called = np.asarray(called, bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    tpr = float(called[truth].mean()) if n_pos else float("nan")
    tnr = float((~called[~truth]).mean()) if n_neg else float("nan")
    return {"detection": (tpr + tnr) / 2, "detection_tpr": tpr, "detection_tnr": tnr,
            "detection_pos": n_pos, "detection_neg": n_neg}


def unit_scores(ue: UnitExamples, predictions: list, detection_examples: list[Example] | None = None,
                detection_predictions: list | None = None) -> dict:
    """Every score of one unit: the simulation scores and, given its contexts, detection."""
    out = score_simulation(ue, predictions)
    if detection_examples is not None:
        out.update(detection_score(detection_examples, detection_predictions, explain_scale(ue)))
    return out


# ---------------------------------------------------------------- medians with intervals
def median_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``(median, low, high)``: the median and a percentile bootstrap interval of the median.

    NaNs are left out; resampling is seeded, so the interval is reproducible. An empty input
    gives NaNs; one value gives a zero-width interval.
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, len(v), (int(n_boot), len(v)))], axis=1)
    a = (1 - level) / 2
    return float(np.median(v)), float(np.quantile(meds, a)), float(np.quantile(meds, 1 - a))


KIND_LABELS = {"feature": "features", "neuron": "neurons", "randomized": "randomized-transformer features",
               "neuron_at_density": "neurons at the features' density",
               "feature_paper2023": "features of the paper's recipe (paper2023)"}


def score_summary(results: dict, scores=tuple(SCORES), part: str = "all", n_boot: int = 2000,
                  seed: int = 0):
    """Long form: one row per (kind, score) with ``n``, ``median``, ``low``, ``high``.

    ``results``: ``{kind: DataFrame}`` of scored units (``score_all``); ``part``: ``"all"``,
    ``"multi_token"`` or ``"single_token"`` (the paper reports single-token features apart).
    """
    if part not in ("all", "multi_token", "single_token"):
        raise ValueError(f"part must be 'all', 'multi_token' or 'single_token', got {part!r}")
    rows = []
    for kind, df in results.items():
        ok = df[df.status == "ok"]
        if part != "all":
            ok = ok[ok.single_token == (part == "single_token")]
        for s in scores:
            if s not in ok.columns:
                raise ValueError(f"the {kind} results have no {s!r} column: rescore them (this score came later)")
            vals = ok[s].to_numpy(np.float64)
            med, lo, hi = median_ci(vals, n_boot, seed)
            rows.append({"kind": kind, "units": KIND_LABELS.get(kind, kind), "score": s,
                         "n": int(np.isfinite(vals).sum()), "median": med, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def score_table(results: dict, scores=tuple(SCORES), part: str = "all", n_boot: int = 2000, seed: int = 0,
                digits: int = 2):
    """One table: a row per kind, a column per score, each ``median [low, high]`` (bootstrap 95%)."""
    long = score_summary(results, scores, part, n_boot, seed)
    table = {}
    for (units, s), g in long.groupby(["units", "score"], sort=False):
        r = g.iloc[0]
        row = table.setdefault(units, {"n": int(r.n)})
        cell = f"{r['median']:.{digits}f} [{r['low']:.{digits}f}, {r['high']:.{digits}f}]" if r.n else "n/a"
        if 0 < r.n != row["n"]:
            cell += f" (n={int(r.n)})"
        row[SCORES[s][0] if s in SCORES else s] = cell
    return pd.DataFrame.from_dict(table, orient="index")
