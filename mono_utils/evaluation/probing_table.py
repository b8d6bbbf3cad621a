"""Sparse probing and absorption for every dictionary, on the corpus's own labels (issue 30, items 2 and 3).

**Sparse probing** (SAEBench; the measure is ``core.probing.sparse_probing``): for each label, can it be
read off k units of a dictionary? The tasks are each corpus *domain* against the rest (code, english,
multilingual, web, cpp, legal, generated) and a few *hard pairs* of subdomains, where only the tokens of
the two subdomains count (Hebrew against Arabic, Chinese against Japanese, Python against JavaScript,
Python against C++ headers, web JSON against generated JSON records, base64 against DNA, docstrings against
package READMEs; the corpus has no hex, so base64 meets DNA, the other random-looking alphabet). Each task
draws at most ``max_per_class`` tokens of each class (seeded), fits a logistic probe on the top-k units of
the training share (k = 1, 2, 5, 20) and reports the held-out accuracy with both classes equally many:
chance is 0.5 whatever the label's share.

**Absorption**, SAEBench's definition adapted from first letters to our labels (``core.probing.absorption``).
SAEBench asks, for the letter a word starts with, whether the letter's main feature fires on the word and,
where it does not, whether a feature whose decoder carries the letter's probe direction fires instead.
Here the letter becomes a corpus label (a domain such as ``generated`` or a subdomain such as ``hebrew``), the
word a token of that label, and:

- the **main feature** is the unit with the best F1 at "on" (> 0) for the label's tokens (precision: the
  share of its firings on the label; recall: the share of the label's tokens where it fires), the choice of
  a domain feature the steering catalog and notebook 07 make; SAEBench picks it with a k = 1 probe;
- a label counts only where that feature is **specific**: precision at least ``PRECISION_BAR`` (0.5: most of
  its firings are on the label). Elsewhere there is no one feature to be absorbed from, and the table says
  so (``specific`` False, no rate);
- the label's **direction** is the difference of the mean MLP activation on its tokens and elsewhere
  (``core.probing.domain_direction``) instead of a fitted probe's weights; a unit **carries** it when its
  decoder vector's cosine with it is at least ``MIN_COS`` (0.5);
- the **absorption rate** is the share of the label's tokens on which the main feature is silent while a
  unit carrying the direction fires. SAEBench also requires the absorbing feature to account for a share of
  the probe's projection; we do not (a plain count), so our rate is an upper bound of theirs.

Every dictionary is read on the same held-out rows (``heldout_rows``), without the BOS position of each row.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..core.probing import absorption, domain_direction, sparse_probing
from ..store.results import array_digest

KS = (1, 2, 5, 20)
# (subdomain, subdomain): hard to tell apart from the text's surface alone; skipped where the corpus lacks one
HARD_PAIRS = (("hebrew", "arabic"), ("chinese", "japanese"), ("python", "js"), ("python", "header"),
              ("json", "json_records"), ("base64", "dna"), ("docstring", "readme"))
PRECISION_BAR = 0.5   # a label's main feature is "specific" when at least half of its firings are on the label
MIN_COS = 0.5         # a unit "carries" a label's direction when its decoder's cosine with it is at least this
MAX_PER_CLASS = 2000  # tokens of each class a probe sees at most (training and held-out together)
MIN_TOKENS = 40       # a label with fewer tokens on the rows is left out (a probe needs both classes)


# ---------------------------------------------------------------- the tokens
@dataclass
class TokenSet:
    """Held-out token rows with their labels; ``keep``: the flat positions measured (every row's BOS left out)."""
    tokens: np.ndarray           # [rows, n_ctx]
    domain: np.ndarray           # [rows, n_ctx] ids into domain_names
    subdomain: np.ndarray        # [rows, n_ctx] ids into subdomain_names
    domain_names: list[str]
    subdomain_names: list[str]
    desc: dict = field(default_factory=dict)

    @property
    def keep(self) -> np.ndarray:
        rows, n_ctx = self.tokens.shape
        pos = np.arange(rows * n_ctx)
        return pos[pos % n_ctx != 0]

    def label_masks(self, min_tokens: int = MIN_TOKENS) -> dict[str, np.ndarray]:
        """``{"domain:x" / "subdomain:x": bool over the kept positions}`` for labels with ``min_tokens`` or more
        tokens and not covering every token."""
        keep = self.keep
        out = {}
        for level, ids, names in (("domain", self.domain, self.domain_names),
                                  ("subdomain", self.subdomain, self.subdomain_names)):
            flat = ids.reshape(-1)[keep]
            for j, n in enumerate(names):
                y = flat == j
                if min_tokens <= int(y.sum()) < len(y):
                    out[f"{level}:{n}"] = y
        return out


def heldout_rows(preset, data, n_tokens: int) -> TokenSet:
    """The first ``n_tokens`` // n_ctx rows of the held-out split (``get_tokens(preset).split("val")``)."""
    tv, dv, sv = data.split("val")
    n_ctx = tv.shape[1]
    rows = min(len(tv), max(1, int(n_tokens) // n_ctx))
    desc = {"preset": getattr(preset, "name", str(preset)), "split": "val", "rows": int(rows), "n_ctx": int(n_ctx),
            "sha256": array_digest(tv[:rows], dv[:rows], sv[:rows]),
            "labels": [list(data.domain_names), list(data.subdomain_names)]}
    return TokenSet(tv[:rows], dv[:rows], sv[:rows], list(data.domain_names), list(data.subdomain_names), desc)


# ---------------------------------------------------------------- activations
def _checked(dictionary, a) -> sp.csr_matrix:
    a = np.asarray(a, np.float32)
    if a.ndim != 2 or a.shape[1] != dictionary.n_units:
        raise ValueError(f"{dictionary.name} returned activations of shape {a.shape}, expected [tokens, "
                         f"{dictionary.n_units}] (the interface of mono_utils.evaluation.dictionaries)")
    if (a < 0).any():
        raise ValueError(f"{dictionary.name} returned negative activations: units are >= 0 "
                         f"(the interface of mono_utils.evaluation.dictionaries)")
    return sp.csr_matrix(a)


def dictionary_acts(dictionary, tokens: np.ndarray | None = None, x: np.ndarray | None = None, batch_rows: int = 64,
                    progress: bool = False) -> sp.csr_matrix:
    """A dictionary's unit activations as a sparse [tokens, units] matrix (float32), a batch at a time (a dense
    4,096-wide matrix of every token would not fit): of token rows ``tokens`` [rows, n_ctx] (``unit_acts``,
    which runs the dictionary's transformer), or of MLP activations ``x`` [tokens, d_mlp] already at hand
    (``encode``: several dictionaries of one model share one forward pass)."""
    if (tokens is None) == (x is None):
        raise ValueError("dictionary_acts needs token rows or MLP activations, one of the two")
    if x is not None:
        step = batch_rows * 128
        parts = [_checked(dictionary, dictionary.encode(x[s:s + step]))
                 for s in tqdm(range(0, len(x), step), desc=f"{dictionary.name} units", disable=not progress)]
    else:
        parts = [_checked(dictionary, dictionary.unit_acts(tokens[s:s + batch_rows], batch_rows=batch_rows))
                 for s in tqdm(range(0, len(tokens), batch_rows), desc=f"{dictionary.name} units",
                               disable=not progress)]
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, dictionary.n_units), dtype=np.float32)


def mlp_acts(dictionary, tokens: np.ndarray, batch_rows: int = 64) -> np.ndarray:
    """[rows * n_ctx, d_mlp] float32: the MLP activations the dictionary reads."""
    return np.asarray(dictionary.mlp_acts(tokens, batch_rows=batch_rows), np.float32)


def iter_acts(dictionaries: dict, ts: TokenSet, masks: dict | None = None, progress: bool = False):
    """For each dictionary (grouped by the model it reads, in the order given within a model), yield
    ``(name, dictionary, acts, kept, directions)``: its activations on every position of ``ts`` (sparse),
    on the kept positions only, and each label's direction (``label_directions``) in its model's MLP
    activations. One forward pass per model; only one model's MLP activations are held at a time."""
    masks = ts.label_masks() if masks is None else masks
    keep = ts.keep
    order = sorted(dictionaries, key=lambda n: list(dict.fromkeys(d.model for d in dictionaries.values()))
                   .index(dictionaries[n].model))
    current, x, directions = None, None, None
    for name in tqdm(order, desc="dictionaries", disable=not progress):
        d = dictionaries[name]
        if d.model != current:
            current, x = d.model, None
            x = mlp_acts(d, ts.tokens)
            directions = label_directions(x[keep], masks)
        acts = dictionary_acts(d, x=x)
        yield name, d, acts, acts[keep], directions


# ---------------------------------------------------------------- sparse probing
@dataclass
class Task:
    name: str             # "domain: code" or "hebrew vs arabic"
    kind: str             # "domain" (one against the rest) or "pair"
    include: np.ndarray   # bool over the kept positions: the tokens this task reads
    y: np.ndarray         # bool over the kept positions: the positive class (meaningful where include)


def label_tasks(ts: TokenSet, pairs=HARD_PAIRS, min_tokens: int = MIN_TOKENS) -> tuple[list[Task], list[str]]:
    """The probing tasks on these rows, and a note for each one left out (a label missing or too rare)."""
    keep = ts.keep
    dom = ts.domain.reshape(-1)[keep]
    sub = ts.subdomain.reshape(-1)[keep]
    tasks, skipped = [], []
    everything = np.ones(len(keep), bool)
    for j, n in enumerate(ts.domain_names):
        y = dom == j
        if min_tokens <= int(y.sum()) <= len(y) - min_tokens:
            tasks.append(Task(f"domain: {n}", "domain", everything, y))
        else:
            skipped.append(f"domain {n}: {int(y.sum())} tokens")
    for a, b in pairs:
        missing = [x for x in (a, b) if x not in ts.subdomain_names]
        if missing:
            skipped.append(f"{a} vs {b}: the corpus has no subdomain {', '.join(missing)}")
            continue
        ya, yb = sub == ts.subdomain_names.index(a), sub == ts.subdomain_names.index(b)
        if min(int(ya.sum()), int(yb.sum())) < min_tokens:
            skipped.append(f"{a} vs {b}: {int(ya.sum())} and {int(yb.sum())} tokens")
            continue
        tasks.append(Task(f"{a} vs {b}", "pair", ya | yb, ya))
    return tasks, skipped


def task_rows(task: Task, max_per_class: int = MAX_PER_CLASS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(positions into the kept tokens, labels): at most ``max_per_class`` of each class, drawn with ``seed``.

    Every dictionary's probe for a task reads these same tokens."""
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(task.include & task.y)
    neg = np.flatnonzero(task.include & ~task.y)
    n = min(len(pos), len(neg), int(max_per_class))
    idx = np.sort(np.concatenate([rng.permutation(pos)[:n], rng.permutation(neg)[:n]]))
    return idx, task.y[idx]


def probe_task(acts: sp.csr_matrix, task: Task, ks=KS, max_per_class: int = MAX_PER_CLASS, seed: int = 0) -> dict:
    """``{k: held-out accuracy}`` of ``core.probing.sparse_probing`` on the task's tokens (``acts`` over the kept
    positions)."""
    idx, y = task_rows(task, max_per_class, seed)
    x = acts[idx].toarray() if sp.issparse(acts) else np.asarray(acts)[idx]
    return sparse_probing(x, y, ks=ks, seed=seed)


def probing_table(acts: dict, tasks: list[Task], ks=KS, max_per_class: int = MAX_PER_CLASS, seed: int = 0,
                  progress: bool = False) -> pd.DataFrame:
    """One row per dictionary, task and k: the probe's held-out accuracy (balanced classes, chance 0.5).

    ``acts``: ``{dictionary name: [kept tokens, units]}`` (sparse or dense), every one on the same tokens."""
    rows = []
    for name, a in tqdm(acts.items(), desc="sparse probing", disable=not progress):
        for t in tasks:
            n = len(task_rows(t, max_per_class, seed)[0]) // 2
            for k, acc in probe_task(a, t, ks, max_per_class, seed).items():
                rows.append({"dictionary": name, "task": t.name, "kind": t.kind, "k": int(k), "accuracy": acc,
                             "tokens per class": n})
    return pd.DataFrame(rows, columns=["dictionary", "task", "kind", "k", "accuracy", "tokens per class"])


def probing_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per dictionary (rows, in the table's order) over the domain tasks and over the hard pairs,
    at each k (columns ``("domain", k)`` / ``("pair", k)``)."""
    order = list(dict.fromkeys(table["dictionary"]))
    wide = table.groupby(["dictionary", "kind", "k"])["accuracy"].mean().unstack(["kind", "k"])
    return wide.reindex(order).sort_index(axis=1)


# ---------------------------------------------------------------- absorption
def best_unit(acts, y: np.ndarray) -> tuple[int, float, float, float]:
    """(unit, precision, recall, F1) of the unit with the best F1 at "on" (> 0) for the bool label ``y``;
    ``acts`` [tokens, units], sparse or dense."""
    on = acts.tocsr(copy=True) if sp.issparse(acts) else sp.csr_matrix(np.asarray(acts))
    on.data = (on.data > 0).astype(np.float64)
    fires = np.asarray(on.sum(0)).ravel()
    hits = np.asarray(on.T @ y.astype(np.float64)).ravel()
    precision = hits / np.maximum(fires, 1)
    recall = hits / max(1, int(y.sum()))
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    u = int(np.argmax(f1))
    return u, float(precision[u]), float(recall[u]), float(f1[u])


def label_directions(x: np.ndarray, masks: dict) -> dict:
    """``{label: unit vector}``: each label's direction in the MLP activations ``x`` [kept tokens, d]
    (``core.probing.domain_direction``); one per model, shared by every dictionary that reads it."""
    return {label: domain_direction(x, y) for label, y in masks.items()}


def absorption_rows(acts: sp.csr_matrix, decoder: np.ndarray, directions: dict, masks: dict,
                    precision_bar: float = PRECISION_BAR, min_cos: float = MIN_COS) -> list[dict]:
    """For each label of ``masks`` (bool over the kept tokens): its main unit, whether that unit is specific,
    and where it is, the absorption rate (``core.probing.absorption``).

    ``acts`` [kept tokens, units]; ``decoder`` [units, d]; ``directions``: ``label_directions`` of the MLP
    activations the dictionary reads."""
    dec = np.asarray(decoder, np.float64)
    unit = dec / (np.linalg.norm(dec, axis=1, keepdims=True) + 1e-12)
    rows = []
    for label, y in masks.items():
        main, prec, rec, f1 = best_unit(acts, y)
        direction = directions[label]
        cos = unit @ direction
        row = {"label": label, "level": label.split(":", 1)[0], "label tokens": int(y.sum()), "main unit": main,
               "precision": prec, "recall": rec, "F1": f1, "specific": bool(prec >= precision_bar),
               "main cos": float(cos[main]), "absorption": float("nan"), "absorbers": 0}
        if row["specific"]:
            # only the main unit and the units carrying the direction matter: those columns, on the label's tokens
            cols = np.array([main] + [int(j) for j in np.flatnonzero(cos >= min_cos) if j != main], np.int64)
            sub = acts[np.flatnonzero(y)][:, cols].toarray()
            res = absorption(sub, np.ones(len(sub), bool), 0, dec[cols], direction, min_cos=min_cos)
            row.update(absorption=res.rate, absorbers=len(res.absorbers))
        rows.append(row)
    return rows


def absorption_table(dictionaries: dict, masks: dict, precision_bar: float = PRECISION_BAR,
                     min_cos: float = MIN_COS, progress: bool = False) -> pd.DataFrame:
    """One row per dictionary and label (``absorption_rows``).

    ``dictionaries``: ``{name: (acts, decoder, directions)}``, ``directions`` from ``label_directions``."""
    rows = []
    for name, (acts, decoder, directions) in tqdm(dictionaries.items(), desc="absorption", disable=not progress):
        rows += [{"dictionary": name, **r}
                 for r in absorption_rows(acts, decoder, directions, masks, precision_bar, min_cos)]
    return pd.DataFrame(rows)


def absorption_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per dictionary: how many labels have a specific main unit, the mean absorption rate over those labels,
    and their main units' mean recall."""
    out = []
    for name, g in table.groupby("dictionary", sort=False):
        spec = g[g["specific"]]
        out.append({"dictionary": name, "labels": len(g), "specific labels": len(spec),
                    "mean absorption": float(spec["absorption"].mean()) if len(spec) else float("nan"),
                    "mean main recall": float(spec["recall"].mean()) if len(spec) else float("nan")})
    return pd.DataFrame(out).set_index("dictionary")


def probing_and_absorption(dictionaries: dict, ts: TokenSet, pairs=HARD_PAIRS, ks=KS,
                           max_per_class: int = MAX_PER_CLASS, precision_bar: float = PRECISION_BAR,
                           min_cos: float = MIN_COS, seed: int = 0, progress: bool = True):
    """``(probing table, absorption table, skipped tasks)`` for ``{name: Dictionary}`` on the rows ``ts``
    (uncached; the evaluation panel keeps them, ``panel.get_evaluation_panel``)."""
    masks = ts.label_masks()
    tasks, skipped = label_tasks(ts, pairs)
    probes, absorbs = [], []
    for name, d, _, kept, directions in iter_acts(dictionaries, ts, masks, progress):
        probes.append(probing_table({name: kept}, tasks, ks, max_per_class, seed))
        absorbs.append(absorption_table({name: (kept, np.asarray(d.decoder), directions)}, masks, precision_bar,
                                        min_cos))
    return pd.concat(probes, ignore_index=True), pd.concat(absorbs, ignore_index=True), skipped
