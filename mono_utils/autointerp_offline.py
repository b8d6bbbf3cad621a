"""The offline autointerp backend: a statistical explainer and simulator (a weak baseline).

No network and no downloaded weights; deterministic; a few milliseconds per unit. It is far
weaker than an LLM: the "explanation" is a table of the tokens on which the unit fires in
its explanation examples (mean 0-9 activation per token and per preceding token) plus the
tokens its output promotes, and the simulator looks tokens up in that table, reading it back
from the explanation text alone. It captures token-level and bigram units, not contexts,
meaning or syntax, so its scores are a lower bound on what an LLM explainer would reach.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from functools import lru_cache

import numpy as np

from .autointerp import ExplainInput, LogitInput, ParseFailure, SimulateInput

_JSON_STR = r'"(?:[^"\\]|\\.)*"'
_ENTRY = re.compile(rf"({_JSON_STR}) \((\d)\)")
_TOKEN = re.compile(_JSON_STR)
SECTIONS = ("Fires on the tokens:", "Also fires on other tokens of these kinds:", "Also fires right after:",
            "Output promotes:", "Seen in contexts like:")


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _sections(text: str) -> dict[str, str]:
    """Split an offline explanation into its named sections."""
    spans = sorted((text.find(s), s) for s in SECTIONS if s in text)
    out = {}
    for k, (i, name) in enumerate(spans):
        end = spans[k + 1][0] if k + 1 < len(spans) else len(text)
        out[name] = text[i + len(name):end]
    return out


@lru_cache(maxsize=65536)
def token_class(tok: str) -> str:
    """A coarse, readable class of a token (script, ACGT letters, digits, word shape...)."""
    t = tok.strip()
    if not t:
        return "whitespace"
    if "\ufffd" in t:
        return "partial character bytes"
    if any(ord(c) > 127 for c in t):
        from .data import script_of
        return f"{script_of(t)} script"
    if len(t) >= 2 and set(t) <= set("ACGT"):
        return "ACGT letters"
    if t.isdigit():
        return "digits"
    if t.isalpha():
        shape = "uppercase" if t.isupper() else "lowercase" if t.islower() else "capitalised" if t[0].isupper() else "mixed-case"
        return f"{shape} {'word' if tok[:1] == ' ' else 'piece'}"
    if t.isalnum():
        return "letters and digits"
    return "punctuation"


def _predict(toks: list[str], on: dict, after: dict, classes: dict | None = None) -> np.ndarray:
    """A token's own entry (else its class's), or its predecessor's entry, whichever is larger."""
    classes = classes or {}
    out = np.zeros(len(toks))
    for i, t in enumerate(toks):
        v = on[t] if t in on else classes.get(token_class(t), 0) if classes else 0
        if i and toks[i - 1] in after:
            v = max(v, after[toks[i - 1]])
        out[i] = v
    return out


class OfflineBackend:
    """A statistical explainer and simulator: no network, no weights, deterministic.

    A **weak baseline**, far below an LLM: the explanation is a table of the tokens on which
    the unit fires in its explanation examples (mean 0-9 activation per token, and per
    preceding token) and the tokens its output promotes; the simulator looks tokens up in
    that table, reading it back from the explanation text alone. It can capture token-level
    and bigram features, not contexts, meaning or syntax.
    """
    name = "offline"
    concurrency = 1

    def __init__(self, max_tokens: int = 30, max_after: int = 10, max_classes: int = 4, min_mean: float = 1.0,
                 shrink: float = 1.0):
        self.max_tokens, self.max_after, self.max_classes = max_tokens, max_after, max_classes
        self.min_mean, self.shrink = min_mean, shrink

    def explain(self, inp: ExplainInput) -> str:
        cur, prev = defaultdict(list), defaultdict(list)
        best = (None, -1)
        for ex in inp.examples:
            toks, acts = ex["tokens"], ex["acts"]
            for i, (t, a) in enumerate(zip(toks, acts)):
                cur[t].append(a)
                if i:
                    prev[toks[i - 1]].append(a)
                if a > best[1]:
                    best = (ex, a)
        on = self._table(cur, self.max_tokens, self.min_mean)
        aft = self._table(prev, self.max_after, self.min_mean)
        known = {t for _, t in on}
        by_class = defaultdict(list)       # token classes, on positions the token table does not cover
        for ex in inp.examples:
            for t, a in zip(ex["tokens"], ex["acts"]):
                if t not in known:
                    by_class[token_class(t)].append(a)
        cls = self._table(by_class, self.max_classes, self.min_mean)
        # keep the account that fits the explanation examples best (simplest first on ties)
        options = [(on, [], []), ([], aft, []), (on, aft, []), (on, [], cls), (on, aft, cls)]
        errors = [self._sse(inp.examples, *(dict((t, m) for m, t in x) for x in o)) for o in options]
        on, aft, cls = options[int(np.argmin(errors))]
        parts = ["Statistical explanation (offline baseline)."]
        parts.append("Fires on the tokens: " + (", ".join(f"{_q(t)} ({m})" for m, t in on) or "none") + ".")
        if cls:
            parts.append("Also fires on other tokens of these kinds: " + ", ".join(f"{_q(t)} ({m})" for m, t in cls) + ".")
        if aft:
            parts.append("Also fires right after: " + ", ".join(f"{_q(t)} ({m})" for m, t in aft) + ".")
        if inp.top_logits:
            parts.append("Output promotes: " + ", ".join(_q(t) for t in inp.top_logits) + ".")
        if best[0] is not None:
            parts.append("Seen in contexts like: " + _q("".join(best[0]["tokens"])))
        return " ".join(parts)

    def _table(self, stats, limit, floor) -> list[tuple[int, str]]:
        """(rounded shrunk mean, token) for the tokens that explain the most squared activation."""
        rows = []
        for t, v in stats.items():
            m = sum(v) / (len(v) + self.shrink)       # shrink towards 0: one sighting is weak evidence
            if m >= floor:
                rows.append((-len(v) * m * m, t, min(9, int(round(m)))))
        rows.sort()
        return [(m, t) for _, t, m in rows[:limit]]

    @staticmethod
    def _sse(examples, on: dict, after: dict, classes: dict) -> float:
        err = 0.0
        for ex in examples:
            toks = ex["tokens"]
            pred = _predict(toks, on, after, classes)
            err += float(np.sum((np.asarray(ex["acts"], float) - pred) ** 2))
        return err

    @staticmethod
    def parse_explanation(text: str) -> dict:
        """``{"on", "classes", "after": {token or class: 0-9}, "promoted": [token]}`` from the text."""
        sec = _sections(text)
        if "Fires on the tokens:" not in sec:
            raise ParseFailure("the explanation has no 'Fires on the tokens:' section (not an offline "
                               "explanation: use the backend that wrote it)")
        def entries(s):
            return {json.loads(t): int(v) for t, v in _ENTRY.findall(s)}
        promoted = [json.loads(t) for t in _TOKEN.findall(sec.get("Output promotes:", ""))]
        return {"on": entries(sec["Fires on the tokens:"]), "after": entries(sec.get("Also fires right after:", "")),
                "classes": entries(sec.get("Also fires on other tokens of these kinds:", "")), "promoted": promoted}

    def simulate(self, inp: SimulateInput) -> list[list[float]]:
        e = self.parse_explanation(inp.explanation)
        return [_predict(toks, e["on"], e["after"], e["classes"]).tolist() for toks in inp.examples]

    def label_logits(self, inp: LogitInput) -> list[bool]:
        """Rank tokens by likeness to the promoted (and firing) tokens; label the top half."""
        e = self.parse_explanation(inp.explanation)
        ref = e["promoted"] or list(e["on"])
        classes = Counter(token_class(t) for t in ref)
        grams = {t.strip().lower()[i:i + 2] for t in ref for i in range(max(1, len(t.strip()) - 1))}
        def sim(t):
            s = t.strip().lower()
            g = {s[i:i + 2] for i in range(max(1, len(s) - 1))}
            return classes.get(token_class(t), 0) / max(1, len(ref)) + len(g & grams) / max(1, len(g))
        scores = np.array([sim(t) for t in inp.tokens])
        order = np.argsort(-scores, kind="stable")
        out = np.zeros(len(scores), bool)
        out[order[: len(scores) // 2]] = True
        return out.tolist()

    def estimate(self, n_units: int) -> dict:
        return {"backend": self.name, "calls": 0, "cached": 0, "input_tokens": 0, "output_tokens": 0,
                "note": "offline: no API calls"}


def lookup_ceiling(source, units, seed: int = 0, labels: np.ndarray | None = None) -> dict:
    """How far any token-lookup simulator could go: the protocol's held-out examples and scores,
    with the simulator replaced by an *oracle* that predicts the unit's mean activation on each
    token (``"token"``), on each (previous, current) token pair (``"pair"``), or on each token
    within each text label (``"label_token"``: the corpus subdomain, as if the simulator knew
    what kind of text it reads), over the whole evaluation set. The oracle reads the test rows'
    statistics: a ceiling, never a method.

    Returns ``{"unit", "token", "pair", "label_token", "single_token"}`` arrays (importance-weighted
    Spearman; ``label_token`` is NaN without labels). ``source``: an ``autointerp_run.IndexSource``
    (its index's subdomain labels are used) or anything with ``unit_acts`` and ``corpus``;
    ``labels``: per-token int labels shaped like the corpus tokens, to use other labels.
    """
    from .autointerp import score_simulation, select_examples
    from .autointerp_run import unit_seed
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
        flat_a = acts.reshape(-1).astype(np.float64)
        means = {"token": (flat_t, np.bincount(flat_t, flat_a, vocab) / tok_n),
                 "pair": (inv, np.bincount(inv, flat_a) / pair_n)}
        if lab_inv is not None:
            means["label_token"] = (lab_inv, np.bincount(lab_inv, flat_a) / lab_n)
        ue = select_examples(acts, source.corpus, unit_seed(seed, u))
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
    import pandas as pd
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
    import pandas as pd
    from tqdm.auto import tqdm
    from .autointerp_run import sample_units, score_units
    if not budgets or any(int(k) < 1 for k in budgets):
        raise ValueError(f"budgets must be token counts >= 1, got {budgets!r}")
    units = {kind: sample_units(src, n_units, seed) for kind, src in sources.items()}
    rows = []
    for k in tqdm(budgets, desc="explanation budgets", disable=not progress):
        backend = OfflineBackend(max_tokens=int(k), max_after=0, max_classes=0)
        for kind, src in sources.items():
            df = score_units(src, units[kind], backend, seed=seed, logits=False, progress=False, verbose=False)
            ok = df[df.status == "ok"]
            multi = ok[~ok.single_token]
            rows.append({"tokens named": int(k), "kind": kind, "scored": len(ok),
                         "median": float(ok.spearman.median()) if len(ok) else float("nan"),
                         "median, multi-token": float(multi.spearman.median()) if len(multi) else float("nan")})
    return pd.DataFrame(rows)
