"""Blinded human rating of features and neurons with the paper's rubric (max 14), for a classroom.

A ``RatingSession`` draws a seeded random mix of live features and neurons, hides which is
which, and records each rating to ``data/ratings/<rater>.csv`` right away. The file is
append-only: each rating is one line appended (and fsynced) under a lock, so two sessions of
one rater (two browser tabs, a restarted kernel with an old form open) never drop each other's
rows, and a row is never lost by a rewrite. Re-rating an item appends a newer row; readers keep
the newest row of each (rater, seed, SAE, item). A session restarted with the same rater, seed
and SAE resumes at the first unrated unit. ``load_ratings`` reads many raters' files, keeps
every good row and reports the bad ones (a damaged line stays in the file for a human to see);
``summary``, ``unblind_figure`` and ``agreement`` unblind the result.

Interpretations are capped at ``MAX_INTERPRETATION`` characters at entry (a clear error, never a
silent cut). An interpretation that starts with ``=``, ``+``, ``-`` or ``@`` is saved with a
leading apostrophe (``'=1+1``) so that a spreadsheet opening the class's CSVs shows it as text
instead of running it as a formula (CSV injection); it is read back with the apostrophe.

Rubric (Bricken et al. 2023): confidence 0-3, activation consistency 0-5, logit consistency
0-3, effect-size separation 0-1 (only when logit consistency < 3; otherwise not applicable),
specificity 0-3; total 0-14.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..store.artifacts import file_lock, repo_root

RUBRIC = {  # name: (max, question)
    "confidence": (3, "Confidence in the interpretation"),
    "activation_consistency": (5, "Consistency of high-activation tokens with the interpretation"),
    "logit_consistency": (3, "Consistency of positive logit effects with the interpretation"),
    "effect_separation": (1, "If some logit effects were inconsistent: a separation in effect size between "
                             "consistent and inconsistent ones? (not applicable when logit consistency is 3)"),
    "specificity": (3, "Specificity of the interpretation"),
}
SCORES = list(RUBRIC)
MAX_TOTAL = 14
FIELDS = ["rater", "seed", "sae", "item", "kind", "unit", "interpretation", *SCORES, "total", "timestamp"]
MAX_INTERPRETATION = 2000        # characters; the csv module's field limit is 131072
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")   # a spreadsheet runs a cell starting with these


_RATER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}")   # it names the file <rater>.csv


def default_folder() -> Path:
    """``data/ratings/`` in the repo, or ``$MONO_RATINGS_DIR`` (tests, a shared class folder)."""
    env = os.environ.get("MONO_RATINGS_DIR")
    return Path(env) if env else repo_root() / "data" / "ratings"


def rater_file(rater: str, folder: str | Path | None = None) -> Path:
    name = (rater or "").strip()
    if not name:
        raise ValueError("the rater name is empty: type your name (letters, digits, - or _) so your ratings get their own file")
    if not _RATER_NAME.fullmatch(name):
        raise ValueError(f"rater name {rater!r} may only use letters, digits, '-' and '_', not starting with '-' "
                         f"(it names the file data/ratings/<rater>.csv): try "
                         f"{re.sub(r'[^A-Za-z0-9_-]', '_', name).lstrip('-')[:64] or 'rater1'!r}")
    return Path(folder or default_folder()) / f"{name}.csv"


def rubric_total(confidence: int, activation_consistency: int, logit_consistency: int,
                 effect_separation: int | None, specificity: int) -> int:
    """The paper's total (0-14): separation counts only when logit consistency is below 3."""
    vals = {"confidence": confidence, "activation_consistency": activation_consistency,
            "logit_consistency": logit_consistency, "specificity": specificity}
    for k, v in vals.items():
        _check_score(k, v)
    sep = 0
    if logit_consistency < 3:
        sep = 0 if effect_separation in (None, "") else _check_score("effect_separation", effect_separation)
    return int(confidence + activation_consistency + logit_consistency + sep + specificity)


def _check_score(name: str, v) -> int:
    hi = RUBRIC[name][0]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= hi:
        raise ValueError(f"{name} must be an integer from 0 to {hi}, got {v!r}")
    return int(v)


# ---------------------------------------------------------------- the file
def read_ratings(path: str | Path) -> tuple[list[dict], list[str]]:
    """(good rows, problems). A damaged file is never fatal: bad lines are reported and skipped.

    ``<rater>.csv`` holds one rater's ratings: a row naming another rater (a ``bob`` row pasted into
    ``mallory.csv``) is reported and skipped, never counted as that rater's.
    """
    path = Path(path)
    owner = path.stem if _RATER_NAME.fullmatch(path.stem) else None
    if not path.exists():
        return [], []
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_bytes().decode("utf-8", "replace")
        problems.append(f"{path.name}: not valid UTF-8; undecodable bytes replaced")
    lines = text.splitlines()
    if not lines:
        return [], problems
    try:
        header = next(csv.reader([lines[0]]))
    except csv.Error:
        header = []
    start = 1
    if header != FIELDS:
        problems.append(f"{path.name} line 1: header is not {','.join(FIELDS)}; reading the lines as data")
        start = 0 if len(header) == len(FIELDS) and header[0] != "rater" else 1
    rows: dict[tuple, dict] = {}
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        try:
            r = _parse_row(next(csv.reader([line])))
        except (ValueError, csv.Error, StopIteration) as e:
            problems.append(f"{path.name} line {n}: {e} (line skipped: {line[:60]!r})")
            continue
        if owner is not None and r["rater"] != owner:
            problems.append(f"{path.name} line {n}: a row for rater {r['rater']!r} in {owner}'s file (each rater's "
                            f"ratings live in <rater>.csv; line skipped, not counted as {r['rater']}'s)")
            continue
        key = (r["rater"], r["seed"], r["sae"], r["item"])
        rows.pop(key, None)         # the newest row of an item wins (re-ratings are appended)
        rows[key] = r
    return list(rows.values()), problems


def _parse_row(vals: list[str]) -> dict:
    if len(vals) != len(FIELDS):
        raise ValueError(f"expected {len(FIELDS)} fields, found {len(vals)}")
    r = dict(zip(FIELDS, vals))
    if r["kind"] not in ("feature", "neuron"):
        raise ValueError(f"kind {r['kind']!r} is not feature/neuron")
    for k in ("seed", "item", "unit", "total"):
        r[k] = int(r[k])
    for k in SCORES:
        r[k] = None if (k == "effect_separation" and r[k] == "") else int(r[k])
    total = rubric_total(*(r[k] for k in SCORES))
    if total != r["total"]:
        raise ValueError(f"total {r['total']} does not match the scores (should be {total})")
    return r


def _format(rows: list[dict], header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(FIELDS)
    for r in rows:
        w.writerow(["" if r.get(k) is None else r[k] for k in FIELDS])
    return buf.getvalue()


def neutralise(text: str) -> str:
    """``text`` made safe for a spreadsheet: a leading ``= + - @`` (or tab/CR) gets an apostrophe."""
    return "'" + text if text[:1] in FORMULA_START else text


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append ``rows`` to a ratings file under a lock, fsynced; nothing already in the file is rewritten.

    A missing or empty file gets the header first; a file whose last line was cut (a crash
    mid-write) gets a newline first, so the cut line stays one damaged line and the new rows
    stay whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.name}.lock"):
        with open(path, "ab") as f:
            size = f.seek(0, os.SEEK_END)
            lead = b""
            if size:
                with open(path, "rb") as r:
                    r.seek(size - 1)
                    lead = b"" if r.read(1) == b"\n" else b"\n"
            f.write(lead + _format(rows, header=size == 0).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------- a session
def draw_units(index, n_features: int = 20, n_neurons: int = 20, seed: int = 0) -> list[tuple[str, int]]:
    """A shuffled, seeded mix of live (not dead, not ultralow) features and neurons."""
    rng = np.random.default_rng(seed)
    plan = []
    for kind, n in (("feature", n_features), ("neuron", n_neurons)):
        if n <= 0:
            continue
        live = index.live_units(kind)
        if len(live) == 0:
            raise ValueError(f"the index has no live {kind}s to rate")
        plan += [(kind, int(u)) for u in rng.choice(live, size=min(n, len(live)), replace=False)]
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


class RatingSession:
    """One rater's blinded session; ratings are saved after every unit and resume on restart."""

    def __init__(self, index, rater: str, seed: int = 0, n_features: int = 20, n_neurons: int = 20,
                 folder: str | Path | None = None, sae_id: str | None = None):
        self.path = rater_file(rater, folder)
        self.rater, self.seed = rater.strip(), int(seed)
        self.sae_id = sae_id or (index.info.get("sae") if getattr(index, "info", None) else None) or "sae"
        self.plan = draw_units(index, n_features, n_neurons, seed)
        self.rows, self.problems = read_ratings(self.path)

    def _mine(self, r: dict) -> bool:
        return r["rater"] == self.rater and r["seed"] == self.seed and r["sae"] == self.sae_id

    @property
    def done_items(self) -> set[int]:
        return {r["item"] for r in self.rows if self._mine(r)}

    @property
    def next_item(self) -> int | None:
        """The first unrated item (0-based), or None when the session is complete."""
        done = self.done_items
        return next((i for i in range(len(self.plan)) if i not in done), None)

    @property
    def finished(self) -> bool:
        return self.next_item is None

    def current(self) -> tuple[int, str, int] | None:
        i = self.next_item
        return None if i is None else (i, *self.plan[i])

    def record(self, interpretation: str, confidence: int, activation_consistency: int, logit_consistency: int,
               effect_separation: int | None, specificity: int, item: int | None = None) -> dict:
        """Save one rating (for the current item unless ``item`` is given); returns the row."""
        item = self.next_item if item is None else int(item)
        if item is None:
            raise ValueError("this session is complete: every unit is rated (start a new seed to rate more)")
        if not 0 <= item < len(self.plan):
            raise ValueError(f"item {item} is outside this session's {len(self.plan)} units")
        total = rubric_total(confidence, activation_consistency, logit_consistency, effect_separation, specificity)
        text = " ".join(str(interpretation or "").split())
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:     # a lone surrogate (half of an emoji from a broken copy-paste)
            raise ValueError(f"the interpretation holds a broken character at position {e.start + 1} (a lone surrogate "
                             f"\\u{ord(text[e.start]):04x}, half of a character lost in a copy-paste): retype or delete "
                             f"it; nothing was saved") from None
        if len(text) > MAX_INTERPRETATION:
            raise ValueError(f"the interpretation is {len(text)} characters long: keep it to at most "
                             f"{MAX_INTERPRETATION} (a sentence or two); nothing was saved")
        kind, unit = self.plan[item]
        row = {"rater": self.rater, "seed": self.seed, "sae": self.sae_id, "item": item, "kind": kind, "unit": unit,
               "interpretation": neutralise(text), "confidence": confidence,
               "activation_consistency": activation_consistency, "logit_consistency": logit_consistency,
               "effect_separation": None if logit_consistency >= 3 else (effect_separation or 0),
               "specificity": specificity, "total": total, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
        append_rows(self.path, [row])
        self.rows, self.problems = read_ratings(self.path)   # other tabs' rows too
        return row

    def progress(self) -> str:
        return f"{len(self.done_items)} of {len(self.plan)} rated"


# ---------------------------------------------------------------- unblinding
def load_ratings(paths) -> tuple["object", list[str]]:
    """All good rows of one or more rating files (or a folder of them) as a DataFrame, plus problems."""
    if isinstance(paths, (str, Path)) and Path(paths).is_dir():
        paths = sorted(Path(paths).glob("*.csv"))
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    rows, problems = [], []
    for p in paths:
        r, pr = read_ratings(p)
        rows += r
        problems += pr
    return pd.DataFrame(rows, columns=FIELDS), problems


def summary(df) -> dict:
    """Median and count of the total per kind (the paper: neurons 0, features 12)."""
    out = {}
    for kind in ("feature", "neuron"):
        t = df[df.kind == kind]["total"]
        out[kind] = {"n": int(len(t)), "median": float(t.median()) if len(t) else None,
                     "mean": float(t.mean()) if len(t) else None}
    return out


def unblind_figure(df):
    """Score distributions for features against neurons."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    fig = go.Figure()
    for kind, col in (("feature", "#1f77b4"), ("neuron", "#d62728")):
        t = df[df.kind == kind]["total"]
        med = f", median {t.median():.1f}" if len(t) else ""
        fig.add_histogram(x=t, name=f"{kind}s (n={len(t)}{med})", marker_color=col, opacity=0.7,
                          xbins=dict(start=-0.5, end=MAX_TOTAL + 0.5, size=1))
    fig.update_layout(barmode="overlay", title="Unblinded: rubric totals (0-14); paper medians: neurons 0, features 12",
                      xaxis_title="total score", yaxis_title="units rated", height=350)
    return fig


def agreement(df) -> dict:
    """Inter-rater agreement on units rated by several raters: pairwise Spearman and mean |difference|."""
    key = ["sae", "kind", "unit"]
    last = df.sort_values("timestamp").groupby(key + ["rater"], as_index=False).last()
    wide = last.pivot_table(index=key, columns="rater", values="total")
    raters = list(wide.columns)
    pairs = []
    for i in range(len(raters)):
        for j in range(i + 1, len(raters)):
            both = wide[[raters[i], raters[j]]].dropna()
            rho = float(spearmanr(both.iloc[:, 0], both.iloc[:, 1])[0]) if len(both) >= 3 else float("nan")
            pairs.append({"a": raters[i], "b": raters[j], "shared_units": int(len(both)),
                          "spearman": rho, "mean_abs_diff": float((both.iloc[:, 0] - both.iloc[:, 1]).abs().mean())
                          if len(both) else float("nan")})
    rhos = [p["spearman"] for p in pairs if not math.isnan(p["spearman"])]
    return {"raters": raters, "pairs": pairs, "mean_spearman": float(np.mean(rhos)) if rhos else float("nan"),
            "units_with_2plus_raters": int((wide.notna().sum(axis=1) >= 2).sum()) if len(wide) else 0}
