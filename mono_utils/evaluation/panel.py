"""One panel of "real against random": every measure of the suite, for every dictionary and control (issue 30, item 5).

Rows are measures, columns dictionaries (``dictionaries.get_dictionaries``: A's neurons, A/1, the paper's recipe,
the randomized-transformer SAE, the frozen-decoder SAE, PCA, and A/1's recipe at seeds 0, 1 and 2, the side runs
of ``seeds.get_seed_runs``). The measures, all on the same held-out rows (``probing_table.heldout_rows``):

- **reconstruction** (FVU, loss recovered): each SAE's own evaluation (its ``metrics.json``), where it applies
  (the neurons and PCA rebuild the activations exactly, by construction; the randomized SAE's is on its own
  transformer; the seed runs and the frozen decoder were evaluated on fewer tokens than A/1);
- **proxies** (notebook 02, ``features.proxies``): for the DNA, base64, Hebrew and Arabic log-likelihood-ratio
  proxies, each dictionary's best unit (the best F1 at its own threshold among the ten units best correlated
  with the proxy, as ``features.proxies.best_units`` picks it); the panel shows the mean over the four proxies
  of its best F1, its specificity when on (> 0) and its Pearson correlation;
- **autointerp** (notebook 03, the offline backend, no network): ``panel_units(preset)`` live units of each
  dictionary drawn with a seed, explained and simulated on the panel's rows; the median of each score (the
  headline weighted Spearman, raw and unweighted Spearman, Pearson), of detection (balanced accuracy) and of the
  logit test; the headline on multi-token units alone; the share of single-token units. Beside them, for the
  four dictionaries notebook 03 scores (A/1, the neurons, the randomized control, the paper's recipe), the
  medians of notebook 03's own run (every live unit on the activation index's tokens): the panel's smaller
  sample can disagree with it, and the randomized control is where it did (on default its headline was lower in
  the panel's sample than in notebook 03's run as docs/findings.md reports it, A/1's close to its own), so both
  are shown;
- the proxies and autointerp leave out each SAE's ultralow cluster (``pipeline.saes.ultralow_mask``), as
  notebooks 02 and 03 and the paper do (the paper's recipe has a large one at our budget);
- **sparse probing** and **absorption** (``probing_table``): mean held-out accuracy over the domain tasks
  and over the hard pairs at k = 1 and k = 20; the mean absorption rate over labels whose main unit is
  specific, and how many labels have one;
- **universality** (notebook 04): the median max correlation of A/1's features with B/1's, and of A's neurons
  with B's, from the cached comparison; it applies to nothing else (no control has a twin in model B).

**The marking rule** (``separation_mark``): a measure *separates* trained from random when A/1's value lies
on the same side of every control's value (the dictionaries of kind ``"control"``: the randomized-transformer
SAE and the frozen-decoder SAE) and farther from each than the seed spread: the range (max - min) of the
measure over A/1's recipe at three seeds (``seeds.beyond_seed_spread``'s range rule). The same side but closer:
*within the seed spread*. A control on each side, or level with A/1: *does not separate*. With fewer than two
seed runs the spread is unknown and a measure beyond every control is marked *separates (spread unknown)*.
The seed runs are side runs on an eighth of A/1's activations (``seeds.side_tokens``), so their spread is a
stand-in for A/1's own; the frozen-decoder control is a side run of the same size, so A/1 meets it with eight
times its training. A second mark, ``mark, seed runs``, applies the same rule to the seed runs' mean (the
trained recipe at the side runs' budget) against the controls: where the two marks differ, the training budget,
not the recipe, may be what separates. The neurons and PCA are shown beside them, but they are neither trained
dictionaries nor random ones: the rule does not read them.

**Budget.** The panel reads every dictionary on ``panel_tokens(preset)`` held-out tokens (65,536 on default)
and scores ``panel_units(preset)`` units of each (256 on default) with the offline backend: fewer than A/1's own
tables (notebook 02's proxy table reads the 1M tokens of the activation index; notebook 03 scores every live
unit), so its figures for A/1 differ from theirs by sampling; the panel says so (``EvaluationPanel.budget``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..autointerp.offline import OfflineBackend
from ..autointerp.protocol import EvalCorpus, ProtocolConfig
from ..autointerp.run import get_offline_scores, score_units, summarize
from ..core.model import direction_logit_weights, model_folder
from ..features.detection import auroc, operating_point
from ..features.proxies import LLR_PROXIES, proxy_llr, token_bytes, tokenizer_bytes_id, unigram_logp
from ..pipeline.models import get_model, get_tokenizer, get_tokens
from ..pipeline.presets import resolve
from ..pipeline.saes import ultralow_mask
from ..store.artifacts import read_json
from ..store.results import array_digest, cached_result, frame_from_json, frame_to_json, input_id
from ..universality.cache import get_comparison
from .dictionaries import DICTIONARY_NAMES, SEED_NAMES, get_dictionaries
from .probing_table import (HARD_PAIRS, KS, MAX_PER_CLASS, MIN_COS, PRECISION_BAR, absorption_summary,
                            absorption_table, heldout_rows, iter_acts, label_tasks, probing_summary, probing_table)
from .seeds import side_tokens

PANEL_VERSION = 3   # 2: the second mark (the seed runs against the controls); 3: ultralow left out, notebook 03's rows
PROXY_CANDIDATES = 10     # units per proxy whose best-F1 threshold is searched (the proxy table's choice)
MIN_FIRINGS = 5           # a unit must fire this often on the panel's rows to be drawn for autointerp
CONTROL = "control"       # the dictionaries' kind that the marking rule reads as random
MAIN = "A/1"

SEPARATES = "separates"
WITHIN = "within the seed spread"
NOT_SEPARATED = "does not separate"
NO_SPREAD = "separates (spread unknown)"
NOT_APPLICABLE = "n/a"
MARK_SYMBOL = {SEPARATES: "✔", NO_SPREAD: "✔?", WITHIN: "≈", NOT_SEPARATED: "✘", NOT_APPLICABLE: "·"}

# (key, group, what a reader calls it, which way is "more interpretable": +1 higher, -1 lower, 0 neither)
MEASURES = [
    ("fvu", "reconstruction", "FVU (the SAE's evaluation)", -1),
    ("loss_recovered", "reconstruction", "loss recovered (zero ablation)", +1),
    ("proxy_f1", "proxies", "best F1 at the unit's threshold (mean of 4 proxies)", +1),
    ("proxy_specificity", "proxies", "specificity when on (> 0), mean of 4", +1),
    ("proxy_pearson", "proxies", "Pearson with the proxy, mean of 4", +1),
    ("ai_spearman", "autointerp", "headline: weighted Spearman, median", +1),
    ("ai_spearman_raw", "autointerp", "Spearman on raw activations, median", +1),
    ("ai_spearman_unweighted", "autointerp", "unweighted Spearman, median", +1),
    ("ai_pearson", "autointerp", "Pearson, median", +1),
    ("ai_detection", "autointerp", "detection (balanced accuracy), median", +1),
    ("ai_logit", "autointerp", "logit test, median", +1),
    ("ai_multi_token", "autointerp", "headline on multi-token units, median", +1),
    ("ai_single_token_share", "autointerp", "share of single-token units", 0),
    ("nb03_spearman", "autointerp, notebook 03's run", "headline, every live unit on the index's tokens", +1),
    ("nb03_detection", "autointerp, notebook 03's run", "detection, every live unit", +1),
    ("nb03_logit", "autointerp, notebook 03's run", "logit test, every live unit", +1),
    ("probe_domain_k1", "sparse probing", "domains, k = 1", +1),
    ("probe_domain_k20", "sparse probing", "domains, k = 20", +1),
    ("probe_pair_k1", "sparse probing", "hard pairs, k = 1", +1),
    ("probe_pair_k20", "sparse probing", "hard pairs, k = 20", +1),
    ("absorption", "absorption", "mean absorption rate (specific labels)", -1),
    ("specific_labels", "absorption", "labels with a specific main unit", +1),
    ("universality", "universality", "median max correlation with model B's twin", +1),
]


# notebook 03's cached run has no seed runs: its rows borrow the seed spread of the same score at the panel's budget
SPREAD_FROM = {"nb03_spearman": "ai_spearman", "nb03_detection": "ai_detection", "nb03_logit": "ai_logit"}
# the kinds of notebook 03's cached offline scores (autointerp.run.get_offline_scores) -> the panel's dictionaries
NB03_KINDS = {"feature": MAIN, "neuron": "neurons", "randomized": "randomized", "feature_paper2023": "paper2023"}


def panel_units(preset) -> int:
    """Units of each dictionary the panel scores with the offline autointerp backend: A/1's width / 16 (default
    256, smoke 32), at most 256. The median of 64 units moved by 0.1 between two draws on default."""
    return int(min(256, max(16, int(preset.sae_main) // 16)))


def panel_tokens(preset) -> int:
    """Held-out tokens the panel reads for every dictionary: a quarter of the preset's evaluation tokens, at least
    16,384 (default: 65,536; the nine dictionaries' activations are most of the stage's time)."""
    return max(16_384, int(preset.eval_tokens) // 4)


# ---------------------------------------------------------------- the marking rule
def separation_mark(main, seeds, controls) -> dict:
    """Does A/1 (``main``: its value) stand apart from every control (``controls``: their values), by more than
    the seed spread (``seeds``: the values of A/1's recipe at several seeds)?

    Returns ``{"mark", "spread", "gap"}``: ``spread`` the seeds' range, max - min (NaN with fewer than two
    values: ``seeds.beyond_seed_spread``'s range rule), ``gap`` the smallest distance from A/1's value to a
    control's (NaN where the controls are not all on one side of it). The mark: ``separates`` (every control
    on one side and gap > spread), ``within the seed spread`` (one side, gap <= spread), ``does not separate``
    (a control on each side, or level), ``separates (spread unknown)`` (one side, no spread), ``n/a`` (no value
    for A/1 or for any control). Missing values (None, NaN) are left out."""
    def finite(vs):
        return np.array([float(v) for v in vs if v is not None and np.isfinite(float(v))], np.float64)
    s, c = finite(seeds), finite(controls)
    spread = float(s.max() - s.min()) if len(s) >= 2 else float("nan")
    if main is None or not np.isfinite(float(main)) or not len(c):
        return {"mark": NOT_APPLICABLE, "spread": spread, "gap": float("nan")}
    diff = float(main) - c
    if not ((diff > 0).all() or (diff < 0).all()):
        return {"mark": NOT_SEPARATED, "spread": spread, "gap": float("nan")}
    gap = float(np.abs(diff).min())
    mark = NO_SPREAD if math.isnan(spread) else SEPARATES if gap > spread else WITHIN
    return {"mark": mark, "spread": spread, "gap": gap}


# ---------------------------------------------------------------- proxies on a dictionary's activations
def proxy_masks(tokens: np.ndarray, tokenizer, keep: np.ndarray, names=LLR_PROXIES) -> dict:
    """``{proxy: bool over the kept positions}``: the log-likelihood-ratio proxies (llr > 0) on ``tokens``."""
    tb = token_bytes(tokenizer)
    lpu = unigram_logp(tokens, len(tb))
    return {n: (proxy_llr(tokens, tb, n, lpu) > 0).reshape(-1)[keep] for n in names}


def proxy_scores(acts: sp.csr_matrix, y: np.ndarray, candidates: int = PROXY_CANDIDATES,
                 excluded: np.ndarray | None = None) -> dict:
    """The unit of ``acts`` [tokens, units] that detects ``y`` best, as ``features.proxies.best_units`` picks it:
    the best F1 at its own threshold among the ``candidates`` units best correlated with ``y`` (units of
    ``excluded``, the ultralow cluster, left out as notebook 02 leaves them out); its scores."""
    a = acts.tocsc()
    y = np.asarray(y, bool)
    n = a.shape[0]
    yf = y.astype(np.float64)
    s_a = np.asarray(a.sum(0)).ravel().astype(np.float64)
    s_aa = np.asarray(a.multiply(a).sum(0)).ravel().astype(np.float64)
    s_ay = np.asarray(a.T @ yf).ravel()
    p = float(yf.mean())
    mean_a = s_a / n
    var = np.maximum(s_aa / n - mean_a ** 2, 0)
    den = np.sqrt(var * p * (1 - p))
    r = np.where(den > 0, (s_ay / n - mean_a * p) / np.where(den > 0, den, 1), -np.inf)
    if excluded is not None:
        r = np.where(np.asarray(excluded, bool), -np.inf, r)
    best = None
    order = np.argsort(-r, kind="stable")[:max(1, candidates)]
    for u in [v for v in order if np.isfinite(r[v])] or order[:1]:   # excluded or constant units only if nothing else
        lo, hi = a.indptr[u], a.indptr[u + 1]
        pos, val = a.indices[lo:hi], a.data[lo:hi]
        op = operating_point(pos, val, y)
        if best is None or op["f1"] > best[1]["f1"]:
            best = (int(u), op, pos, val)
    u, op, pos, val = best
    on_y = int(y[pos].sum())
    dense = np.zeros(n, np.float32)
    dense[pos] = val
    return {"unit": u, "best_f1": op["f1"], "specificity": on_y / max(1, len(pos)),
            "sensitivity": on_y / max(1, int(y.sum())), "auroc": auroc(dense, y),
            "pearson": float(r[u]) if np.isfinite(r[u]) else 0.0, "average_precision": op["average_precision"]}


def proxy_rows(acts: sp.csr_matrix, masks: dict, candidates: int = PROXY_CANDIDATES,
               excluded: np.ndarray | None = None) -> list[dict]:
    return [{"proxy": name, "proxy tokens": int(y.sum()), **proxy_scores(acts, y, candidates, excluded)}
            for name, y in masks.items() if 0 < int(y.sum()) < len(y)]


# ---------------------------------------------------------------- autointerp on a dictionary's activations
class _PanelSource:
    """An autointerp source (``autointerp.run``'s interface) over a dictionary's sparse activations on the
    panel's rows: each unit's [rows, n_ctx] activations and its logit weights."""

    def __init__(self, corpus: EvalCorpus, acts: sp.csc_matrix, logits: dict, kind: str):
        self.corpus, self.kind, self._acts, self._logits = corpus, kind, acts, logits

    @property
    def units(self) -> list[int]:
        return sorted(self._logits)

    def unit_acts(self, unit: int) -> np.ndarray:
        lo, hi = self._acts.indptr[unit], self._acts.indptr[unit + 1]
        out = np.zeros(self.corpus.tokens.size, np.float32)
        out[self._acts.indices[lo:hi]] = self._acts.data[lo:hi]
        return out.reshape(self.corpus.tokens.shape)

    def logit_weights(self, unit: int):
        return self._logits[unit]


def excluded_units(dictionary) -> np.ndarray | None:
    """Bool [n_units]: the dictionary's ultralow cluster (its SAE's metrics), which notebooks 02 and 03 leave out
    of the proxies and autointerp as the paper does; None where there is none recorded (bases, planted ones)."""
    sae = getattr(dictionary, "sae", None)
    mask = ultralow_mask(sae) if sae is not None else None
    return None if mask is None else np.asarray(mask, bool)


def sample_live_units(acts: sp.csr_matrix, n: int, seed: int = 0, min_firings: int = MIN_FIRINGS,
                      excluded: np.ndarray | None = None) -> list[int]:
    """``n`` units drawn with ``seed`` among those firing on at least ``min_firings`` tokens and not ``excluded``
    (all of them when fewer)."""
    ok = np.asarray((acts > 0).sum(0)).ravel() >= min_firings
    if excluded is not None:
        ok &= ~np.asarray(excluded, bool)
    live = np.flatnonzero(ok)
    if len(live) > n:
        live = np.sort(np.random.default_rng(seed).choice(live, size=n, replace=False))
    return [int(u) for u in live]


@torch.no_grad()
def autointerp_frame(acts: sp.csr_matrix, decoder: np.ndarray, model, corpus: EvalCorpus, name: str,
                     n_units: int = 64, seed: int = 0, progress: bool = False,
                     excluded: np.ndarray | None = None) -> pd.DataFrame:
    """Every offline autointerp score of ``n_units`` live units of one dictionary (``score_units``, offline backend).

    ``acts`` [rows * n_ctx, units] on ``corpus.tokens``; ``decoder`` [units, d_mlp]; ``model``: the transformer
    whose MLP the dictionary reads (the logit test's weights: decoder direction -> W_out -> W_U)."""
    units = sample_live_units(acts, n_units, seed, excluded=excluded)
    if not units:
        return pd.DataFrame()
    dirs = torch.as_tensor(np.asarray(decoder)[units], dtype=torch.float32)
    logits = direction_logit_weights(model, dirs).cpu().numpy()
    src = _PanelSource(corpus, acts.tocsc(), {u: logits[i] for i, u in enumerate(units)}, name)
    return score_units(src, units, OfflineBackend(), seed=seed, progress=progress, verbose=False)


def autointerp_measures(df: pd.DataFrame) -> dict:
    if df is None or df.empty:
        return {}
    s = summarize(df)
    ok = df[df.status == "ok"]
    return {"ai_spearman": s["all"].get("median_spearman"), "ai_spearman_raw": s["all"].get("median_spearman_raw"),
            "ai_spearman_unweighted": s["all"].get("median_spearman_unweighted"),
            "ai_pearson": s["all"].get("median_pearson"), "ai_detection": s["all"].get("median_detection"),
            "ai_logit": s["all"].get("median_logit_accuracy"),
            "ai_multi_token": s["multi_token"].get("median_spearman"),
            "ai_single_token_share": float(ok.single_token.mean()) if len(ok) else float("nan")}


# ---------------------------------------------------------------- reconstruction, read from the SAEs' evaluation
def stored_metrics(dictionary) -> dict:
    """The dictionary's SAE evaluation (``metrics.json``): its own ``metrics``, else its SAE's folder's; {} if none."""
    m = getattr(dictionary, "metrics", None)
    if isinstance(m, dict) and m:
        return m
    for obj in (dictionary, getattr(dictionary, "sae", None)):
        folder = getattr(obj, "folder", None)
        if folder and (Path(folder) / "metrics.json").exists():
            return read_json(Path(folder) / "metrics.json")
    return {}


def dictionary_identity(dictionary) -> dict:
    """What a dictionary's measures depend on, for the cache's config: the stored folder behind it where it
    has one (an SAE's or PCA's: the name holds the hash of its config), its name, kind, model and width, a
    digest of its decoder and its note."""
    folder = None
    for obj in (dictionary, getattr(dictionary, "sae", None), getattr(dictionary, "pca", None)):
        folder = folder or getattr(obj, "folder", None)
    model = getattr(dictionary, "transformer", None)
    mfolder = model_folder(model) if model is not None else None
    return {"name": dictionary.name, "kind": dictionary.kind, "model": dictionary.model,
            "n_units": int(dictionary.n_units), "folder": Path(folder).name if folder else None,
            "transformer": Path(mfolder).name if mfolder else getattr(model, "mono_randomized_seed", None),
            "note": dictionary.note, "decoder": array_digest(np.asarray(dictionary.decoder, np.float32))}


# ---------------------------------------------------------------- the panel
@dataclass
class EvaluationPanel:
    table: pd.DataFrame          # one row per measure: group, measure, better, a column per dictionary, spread, gap, mark
    probing: pd.DataFrame        # probing_table's long table
    absorption: pd.DataFrame     # absorption_table's long table
    proxies: pd.DataFrame        # one row per dictionary and proxy
    autointerp: pd.DataFrame     # one row per scored unit (numeric columns and status)
    dictionaries: pd.DataFrame   # name, kind, model, units, live units, L0 on the panel's rows, note
    params: dict = field(default_factory=dict)

    @property
    def budget(self) -> str:
        p = self.params
        return (f"Every dictionary read on {p.get('tokens', 0):,} held-out tokens ({p.get('rows', 0)} rows), "
                f"{p.get('units', 0)} units of each scored by the offline autointerp backend: fewer than A/1's own "
                f"tables (notebook 02's proxies read the activation index, notebook 03 scores every live unit). "
                f"{p.get('seed_note', '')}")

    def probing_summary(self) -> pd.DataFrame:
        return probing_summary(self.probing)

    def absorption_summary(self) -> pd.DataFrame:
        return absorption_summary(self.absorption)

    def marks(self) -> pd.Series:
        """``{measure: mark}``: where A/1 separates from the random controls."""
        return self.table.set_index("measure")["mark"]


def _value_table(values: dict, names: list[str], seeds: list[str], controls: list[str]) -> pd.DataFrame:
    """The panel's table from ``values[measure key][dictionary name]``, marked by ``separation_mark``."""
    rows = []
    for key, group, label, better in MEASURES:
        v = values.get(key, {})
        # a row without seed runs of its own (notebook 03's run) borrows the spread of the same score at the panel's budget
        seed_vals = [values.get(SPREAD_FROM.get(key, key), {}).get(n) for n in seeds]
        ctrl_vals = [v.get(n) for n in controls]
        mark = separation_mark(v.get(MAIN), seed_vals, ctrl_vals)
        finite = [float(x) for x in seed_vals if x is not None and np.isfinite(float(x))]
        at_budget = separation_mark(float(np.mean(finite)) if finite and key not in SPREAD_FROM else None,
                                    seed_vals, ctrl_vals)
        row = {"group": group, "measure": label, "key": key, "better": {1: "higher", -1: "lower", 0: ""}[better]}
        row.update({n: (float(v[n]) if v.get(n) is not None else float("nan")) for n in names})
        row.update({"seed spread": mark["spread"], "gap to the controls": mark["gap"], "mark": mark["mark"],
                    "mark, seed runs": at_budget["mark"]})
        rows.append(row)
    return pd.DataFrame(rows)


def compute_panel(dictionaries: dict, ts, tokenizer, *, universality: dict | None = None, n_units: int = 64,
                  seed: int = 0, ks=KS, pairs=HARD_PAIRS, max_per_class: int = MAX_PER_CLASS,
                  precision_bar: float = PRECISION_BAR, min_cos: float = MIN_COS, progress: bool = True,
                  notes: dict | None = None, reference_scores: dict | None = None) -> EvaluationPanel:
    """Every measure for every dictionary on the token set ``ts`` (``probing_table.heldout_rows``).

    ``dictionaries``: ``{name: Dictionary}`` with A/1 (``MAIN``) among them; those whose name is in
    ``dictionaries.SEED_NAMES`` give the seed spread, those of kind ``"control"`` are the random ones;
    ``universality``: ``{dictionary name: median max correlation with model B's twin}``;
    ``reference_scores``: ``{dictionary name: per-unit DataFrame}`` of notebook 03's own run (every live unit on
    the activation index's tokens, ``autointerp.run.get_offline_scores``), shown beside the panel's sample."""
    t0 = time.time()
    if MAIN not in dictionaries:
        raise ValueError(f"the panel compares A/1 with the controls: pass a dictionary named {MAIN!r} "
                         f"(got {list(dictionaries)})")
    masks = ts.label_masks()
    tasks, skipped = label_tasks(ts, pairs)
    pmasks = proxy_masks(ts.tokens, tokenizer, ts.keep)
    corpus = EvalCorpus.from_tokenizer(ts.tokens, tokenizer)
    values = {key: {} for key, *_ in MEASURES}
    dict_rows, proxy_out, ai_frames, probe_frames, absorb_frames = {}, {}, {}, {}, {}
    # one dictionary at a time: its activations are measured, then dropped (PCA's and the neurons' are dense)
    for name, d, acts, kept, directions in iter_acts(dictionaries, ts, masks, progress):
        fires = np.asarray((kept > 0).sum(0)).ravel()
        dict_rows[name] = {"dictionary": name, "kind": d.kind, "model": d.model, "units": int(d.n_units),
                           "live units": int((fires > 0).sum()), "L0": float((kept > 0).sum() / max(1, kept.shape[0])),
                           "note": d.note}
        m = stored_metrics(d) if d.kind != "basis" else {}
        values["fvu"][name] = m.get("fvu")
        values["loss_recovered"][name] = m.get("loss_recovered")
        excluded = excluded_units(d)
        prow = proxy_rows(kept, pmasks, excluded=excluded)
        proxy_out[name] = [{"dictionary": name, **r} for r in prow]
        if prow:
            for key, col in (("proxy_f1", "best_f1"), ("proxy_specificity", "specificity"), ("proxy_pearson", "pearson")):
                values[key][name] = float(np.mean([r[col] for r in prow]))
        df = autointerp_frame(acts, d.decoder, d.transformer, corpus, name, n_units, seed, excluded=excluded)
        dict_rows[name]["ultralow (left out of proxies, autointerp)"] = int(excluded.sum()) if excluded is not None else 0
        for key, v in autointerp_measures(df).items():
            values[key][name] = v
        if not df.empty:
            num = df[[c for c in df.columns if df[c].dtype.kind in "biuf"] + ["status"]].copy()
            num.insert(0, "dictionary", name)
            ai_frames[name] = num
        probe_frames[name] = probing_table({name: kept}, tasks, ks, max_per_class, seed)
        absorb_frames[name] = absorption_table({name: (kept, np.asarray(d.decoder), directions)}, masks,
                                               precision_bar, min_cos)
        del acts, kept
    names = list(dictionaries)          # every table in the order asked
    probing = pd.concat([probe_frames[n] for n in names], ignore_index=True)
    summ = probing_summary(probing) if len(probing) else pd.DataFrame()
    for key, kind, k in (("probe_domain_k1", "domain", 1), ("probe_domain_k20", "domain", 20),
                         ("probe_pair_k1", "pair", 1), ("probe_pair_k20", "pair", 20)):
        if (kind, k) in summ.columns:
            values[key].update({n: float(summ.loc[n, (kind, k)]) for n in summ.index})
    absorb = pd.concat([absorb_frames[n] for n in names], ignore_index=True)
    asum = absorption_summary(absorb)
    for n in asum.index:
        values["absorption"][n] = asum.loc[n, "mean absorption"]
        values["specific_labels"][n] = float(asum.loc[n, "specific labels"])
    values["universality"].update(universality or {})
    for name, df in (reference_scores or {}).items():
        ref = summarize(df)["all"]
        values["nb03_spearman"][name] = ref.get("median_spearman")
        values["nb03_detection"][name] = ref.get("median_detection")
        values["nb03_logit"][name] = ref.get("median_logit_accuracy")
    seeds = [n for n in names if n in SEED_NAMES]
    controls = [n for n in names if dictionaries[n].kind == CONTROL]
    table = _value_table(values, names, seeds, controls)
    params = {"tokens": int(ts.tokens.size), "rows": int(len(ts.tokens)), "units": int(n_units),
              "seed": int(seed), "ks": [int(k) for k in ks], "max_per_class": int(max_per_class),
              "precision_bar": float(precision_bar), "min_cos": float(min_cos), "seeds": seeds,
              "controls": controls, "skipped_tasks": skipped, "proxies": list(pmasks),
              "seconds": round(time.time() - t0, 1), **(notes or {})}
    ai = pd.concat([ai_frames[n] for n in names if n in ai_frames], ignore_index=True) if ai_frames else pd.DataFrame()
    proxies = pd.DataFrame([r for n in names for r in proxy_out[n]])
    return EvaluationPanel(table, probing, absorb, proxies, ai, pd.DataFrame([dict_rows[n] for n in names]), params)


# ---------------------------------------------------------------- cached, the build stage
_FRAMES = ("table", "probing", "absorption", "proxies", "autointerp", "dictionaries")
_NOT_VALUES = ("group", "measure", "key", "better", "seed spread", "gap to the controls", "mark", "mark, seed runs")


def _to_result(panel: EvaluationPanel) -> tuple[dict, dict]:
    names = [c for c in panel.table.columns if c not in _NOT_VALUES]
    arrays = {"values": panel.table[names].to_numpy(np.float64) if names else np.zeros((len(panel.table), 0))}
    meta = {f: frame_to_json(getattr(panel, f)) for f in _FRAMES}
    meta["params"] = panel.params
    return arrays, meta


def _from_result(arrays: dict, meta: dict) -> EvaluationPanel:
    return EvaluationPanel(*(frame_from_json(meta[f]) for f in _FRAMES), params=dict(meta["params"]))


def get_evaluation_panel(preset=None, store=None, *, progress: bool = True, dictionaries: dict | None = None,
                         n_units: int | None = None, n_tokens: int | None = None, reference_scores: bool = True,
                         force: bool = False) -> EvaluationPanel:
    """The panel of "real against random" for the preset: computed once (the build stage "evaluation panel"),
    then loaded in a second.

    Needs model A, the tokenizer, every dictionary of ``get_dictionaries`` (``DICTIONARY_NAMES`` and the seed
    runs ``SEED_NAMES``), the universality comparison and notebook 03's offline scores (each built if missing;
    ``reference_scores=False`` leaves notebook 03's rows empty). ``dictionaries``: already loaded ones (A/1 among
    them), to skip loading them. ``n_units``: default ``panel_units(preset)``; ``n_tokens``: ``panel_tokens``."""
    p, s = resolve(preset, store)
    n_units = panel_units(p) if n_units is None else int(n_units)
    if dictionaries is None:
        dictionaries = get_dictionaries(p, s, names=DICTIONARY_NAMES + SEED_NAMES, progress=progress)
    data = get_tokens(p, s)
    tok = get_tokenizer(p, s)
    model = get_model(p, s, which="A", progress=progress)
    ts = heldout_rows(p, data, n_tokens if n_tokens is not None else panel_tokens(p))
    config = {"model": input_id(model_folder(model)), "tokens": ts.desc, "tokenizer": tokenizer_bytes_id(tok),
              "dictionaries": [dictionary_identity(d) for d in dictionaries.values()], "units": int(n_units),
              "seed": 0, "ks": list(KS), "pairs": [list(x) for x in HARD_PAIRS], "max_per_class": MAX_PER_CLASS,
              "precision_bar": PRECISION_BAR, "min_cos": MIN_COS, "candidates": PROXY_CANDIDATES,
              "min_firings": MIN_FIRINGS, "protocol": asdict(ProtocolConfig()), "reference_scores": bool(reference_scores),
              "ultralow": {n: (array_digest(m) if m is not None else None)
                           for n, m in ((n, excluded_units(d)) for n, d in dictionaries.items())},
              "version": PANEL_VERSION}
    seeds = [n for n in dictionaries if n in SEED_NAMES]
    notes = {"seed_note": (f"Seed spread: A/1's recipe at {len(seeds)} seeds ({', '.join(seeds)}), each a side run "
                           f"on {side_tokens(p):,} activations (A/1: {p.sae_tokens:,}), so the spread is that of "
                           f"the smaller runs." if len(seeds) >= 2 else
                           "No seed spread (fewer than two seed runs given): a measure beyond every control is "
                           "marked 'separates (spread unknown)'.")}

    def compute():
        uni = {}
        if MAIN in dictionaries or "neurons" in dictionaries:
            res = get_comparison(p, s, progress=progress)
            uni = {MAIN: res.features.median, "neurons": res.neurons.median}
        ref = {}
        if reference_scores:   # notebook 03's own run, cached by the build's stage "autointerp offline"
            ref = {NB03_KINDS[k]: df for k, df in get_offline_scores(p, s, progress=progress).items()
                   if k in NB03_KINDS and NB03_KINDS[k] in dictionaries}
        panel = compute_panel(dictionaries, ts, tok, universality=uni, n_units=n_units, progress=progress,
                              notes=notes, reference_scores=ref)
        return _to_result(panel)

    arrays, meta = cached_result(f"evaluation-panel-{p.name}", config, compute, s, force=force)
    return _from_result(arrays, meta)


# ---------------------------------------------------------------- the picture
def panel_figure(panel: EvaluationPanel, title: str | None = None):
    """Measures (rows) x dictionaries (columns): each row coloured from its worst to its best value (by the
    measure's own direction; neutral rows by value), the values written in; each row's label ends with its mark
    (✔ separates, ≈ within the seed spread, ✘ does not separate, ✔? no spread known, · n/a)."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    t = panel.table
    names = [c for c in panel.dictionaries["dictionary"]] if len(panel.dictionaries) else []
    names = [n for n in names if n in t.columns]
    vals = t[names].to_numpy(np.float64)
    z = np.full_like(vals, np.nan)
    for i, better in enumerate(t["better"]):
        row = vals[i]
        ok = np.isfinite(row)
        if ok.sum() >= 1:
            lo, hi = row[ok].min(), row[ok].max()
            scaled = (row - lo) / (hi - lo) if hi > lo else np.full_like(row, 0.5)
            z[i] = 1 - scaled if better == "lower" else scaled
    text = [["" if not np.isfinite(v) else (f"{v:.0f}" if abs(v) >= 10 else f"{v:.2f}") for v in r] for r in vals]
    colour = {SEPARATES: "#1b7f3b", NO_SPREAD: "#1b7f3b", WITHIN: "#b26a00", NOT_SEPARATED: "#b3261e",
              NOT_APPLICABLE: "#777"}
    labels = [f"{g}: {m} <span style='color:{colour[k]}'>{MARK_SYMBOL[k]}</span>"
              for g, m, k in zip(t["group"], t["measure"], t["mark"])]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=labels, text=text, texttemplate="%{text}", colorscale="RdYlGn", zmin=0, zmax=1,
        showscale=False, hoverongaps=False,
        customdata=np.array([[[m, m2]] * len(names) for m, m2 in zip(t["mark"], t["mark, seed runs"])], dtype=object),
        hovertemplate="%{y}<br>%{x}: %{text}<br>A/1 against the controls: %{customdata[0]}<br>the seed runs against "
                      "the controls: %{customdata[1]}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or "Real against random: ✔ A/1 beyond every random control by more than its seed "
                                     "spread, ≈ within it, ✘ not beyond",
                      height=60 + 26 * len(t), margin=dict(l=10, r=10, t=60, b=10), xaxis_side="top")
    return fig


def probing_figure(panel: EvaluationPanel, title: str | None = None):
    """Mean held-out accuracy against k (log axis), one line per dictionary: the domain tasks on the left, the hard
    pairs on the right; chance (0.5) dashed. Controls dashed, the seed runs thin, so A/1's spread shows."""
    from plotly.subplots import make_subplots  # lazy: plotly is heavy: figures only
    s = panel.probing_summary()
    kinds = [k for k in ("domain", "pair") if k in s.columns.get_level_values(0)]
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True,
                        subplot_titles=[{"domain": "each domain against the rest", "pair": "hard pairs"}[k] for k in kinds])
    kind_of = dict(zip(panel.dictionaries["dictionary"], panel.dictionaries["kind"]))
    for c, kind in enumerate(kinds, start=1):
        ks = sorted(s[kind].columns)
        for name in s.index:
            seed = name.startswith("A/1 seed")
            fig.add_scatter(x=ks, y=[s.loc[name, (kind, k)] for k in ks], mode="lines+markers", name=name,
                            legendgroup=name, showlegend=c == 1, row=1, col=c,
                            line=dict(dash="dash" if kind_of.get(name) == CONTROL else "solid",
                                      width=1 if seed else 2.5),
                            opacity=0.6 if seed else 1.0)
        fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=1, col=c)
    fig.update_xaxes(type="log", title_text="k (units the probe reads)")
    fig.update_yaxes(title_text="held-out accuracy (balanced)", row=1, col=1)
    fig.update_layout(height=380, title=title or "Sparse probing: how many units does a label need?")
    return fig
