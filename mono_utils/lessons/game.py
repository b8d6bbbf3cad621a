"""Be the simulator: read a unit's explanation and a few contexts, predict its activations, get scored.

Notebook 03's game. A round takes one live unit (a feature or a neuron), runs the offline protocol
on it (explanation and held-out simulation contexts, ``autointerp.run.run_unit``), and shows the
explanation and ``n_contexts`` of those contexts. The student types a 0-10 guess per token; the
score is the importance-weighted Spearman correlation on those tokens, as the protocol scores its
simulator, next to the offline simulator's score on the same tokens. Played for a feature and for a
neuron, it shows which of the two an explanation lets a person predict better.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import ipywidgets as W
import numpy as np

from ..autointerp.protocol import Example, quantise, weighted_spearman
from ..autointerp.backends import get_backend
from ..autointerp.run import run_unit, sample_units

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Round:
    kind: str
    unit: int
    explanation: str
    examples: list[Example]               # the contexts shown
    vocab: list[str] = field(repr=False)
    offline: list[np.ndarray] = field(repr=False)   # the offline simulator's predictions for them
    max_act: float = 1.0

    def contexts(self) -> list[list[str]]:
        return [e.tokens(self.vocab) for e in self.examples]

    def truth(self) -> list[np.ndarray]:
        """True activations on the 0-10 scale of the guesses (10 = the unit's largest activation)."""
        return [np.round(10 * np.clip(e.acts, 0, None) / max(self.max_act, 1e-12), 1) for e in self.examples]


def make_round(source, kind: str, unit: int | None = None, n_contexts: int = 5, seed: int = 0) -> Round:
    """A round on ``unit`` of an autointerp source (``preset_sources(...)[kind]``), or on a random live one."""
    if n_contexts < 2:
        raise ValueError(f"n_contexts must be at least 2 (a score needs variation), got {n_contexts}")
    if unit is None:
        units = sample_units(source, min(50, len(source.units)), seed=seed)
        if not len(units):
            raise ValueError(f"the {kind} source has no live units to play with")
        unit = int(units[0])
    r = run_unit(get_backend("offline"), source.unit_acts(unit), source.corpus, unit, kind,
                 source.logit_weights(unit), keep_prompts=True)
    if r.status != "ok" or "predictions" not in r.extra:
        raise ValueError(f"{kind} {unit} cannot be played ({r.status}): pick another unit")
    sim, pred = r.extra["examples"].simulate, r.extra["predictions"]
    rng = np.random.default_rng(seed)
    active = [i for i, e in enumerate(sim) if e.acts.max() > 0]
    quiet = [i for i, e in enumerate(sim) if e.acts.max() <= 0]
    k = min(len(active), max(2, (n_contexts + 1) // 2))     # at least half the contexts show the unit firing
    pick = list(rng.choice(active, k, replace=False)) if k else []
    rest = [i for i in active + quiet if i not in pick]
    pick += list(rng.choice(rest, min(n_contexts - len(pick), len(rest)), replace=False))
    pick = sorted(int(i) for i in pick)
    return Round(kind, int(unit), r.explanation, [sim[i] for i in pick], list(source.corpus.vocab_strs),
                 [np.asarray(pred[i], float) for i in pick], float(r.max_act or 1.0))


def parse_guesses(text_or_lists, rnd: Round) -> list[np.ndarray]:
    """Guesses as lists of numbers, or one line of numbers per context; checked against the contexts."""
    if isinstance(text_or_lists, str):
        lines = [l for l in text_or_lists.strip().splitlines() if l.strip()]
        rows = [[float(x) for x in _NUMBER.findall(l)] for l in lines]
    else:
        rows = [list(map(float, r)) for r in text_or_lists]
    if len(rows) != len(rnd.examples):
        raise ValueError(f"{len(rows)} rows of guesses for {len(rnd.examples)} contexts: give one row per context")
    out = []
    for i, (row, e) in enumerate(zip(rows, rnd.examples), 1):
        if len(row) != len(e.acts):
            raise ValueError(f"context {i} has {len(e.acts)} tokens but your row has {len(row)} numbers: "
                             f"one guess (0-10) per token")
        if any(not 0 <= v <= 10 for v in row):
            raise ValueError(f"context {i}: guesses must be between 0 and 10, got {row}")
        out.append(np.asarray(row, float))
    return out


def score_guesses(rnd: Round, guesses) -> dict:
    """The headline score of notebook 03 (weighted Spearman against the truth on the 0-9 scale the
    explainer saw) for the guesses and for the offline simulator, on the round's tokens."""
    g = parse_guesses(guesses, rnd)
    true = quantise(np.concatenate([e.acts for e in rnd.examples]), rnd.max_act)
    w = np.concatenate([np.full(len(e.acts), e.weight) for e in rnd.examples])
    return {"you": weighted_spearman(true, np.concatenate(g), w),
            "offline simulator": weighted_spearman(true, np.concatenate(rnd.offline), w),
            "kind": rnd.kind, "unit": rnd.unit, "tokens": int(true.size)}


def _shade(tokens, values) -> str:
    cells = []
    for t, v in zip(tokens, values):
        a = min(1.0, max(0.0, float(v) / 10))
        cells.append(f"<span style='background:rgba(255,140,0,{a:.2f});padding:1px 2px;border:1px solid #ddd'>"
                     f"{html.escape(t).replace(' ', '&nbsp;')}<sub>{float(v):g}</sub></span>")
    return "".join(cells)


def round_widget(rnd: Round, on_score=None):
    """Explanation, numbered contexts, one text box of guesses per context, a 'score me' button."""
    head = W.HTML(f"<b>{rnd.kind} {rnd.unit}</b>: the explanation the simulator reads<pre style='white-space:"
                  f"pre-wrap;max-height:12em;overflow:auto;background:#f6f6f6;padding:4px'>"
                  f"{html.escape(rnd.explanation)}</pre>")
    boxes, rows = [], []
    for i, toks in enumerate(rnd.contexts(), 1):
        shown = " ".join(f"<span style='border:1px solid #ddd;padding:1px 2px'>{html.escape(t).replace(' ', '&nbsp;')}"
                         f"</span>" for t in toks)
        box = W.Text(value=" ".join("0" for _ in toks), description=f"context {i}",
                     layout=W.Layout(width="420px"))
        box.add_class("mono-game-guess")
        boxes.append(box)
        rows.append(W.VBox([W.HTML(shown), box]))
    button = W.Button(description="score me", button_style="primary")
    button.add_class("mono-game-score")
    out = W.HTML()
    out.add_class("mono-game-result")

    def score(_=None):
        try:
            s = score_guesses(rnd, "\n".join(b.value.replace(",", " ") for b in boxes))
        except ValueError as e:
            out.value = f"<span style='color:#b3261e'>⚠ {html.escape(str(e))}</span>"
            return
        truth = "".join(f"<div>{_shade(t, v)}</div>" for t, v in zip(rnd.contexts(), rnd.truth()))
        out.value = (f"<b>your score {s['you']:.2f}</b> (the offline simulator: {s['offline simulator']:.2f}; "
                     f"1 = perfect order, 0 = no better than a constant)<br>the truth (0-10):{truth}")
        if on_score:
            on_score(s)

    button.on_click(score)
    return W.VBox([head, *rows, button, out])


def simulator_game(sources: dict, seed: int = 0, n_contexts: int = 5):
    """Two rounds, a feature and a neuron of the same model; a line at the end compares your scores."""
    rounds = [make_round(sources[k], k, n_contexts=n_contexts, seed=seed) for k in ("feature", "neuron")]
    scores: dict = {}
    summary = W.HTML("Score both rounds, then compare.")
    summary.add_class("mono-game-summary")

    def record(s):
        scores[s["kind"]] = s["you"]
        if len(scores) == 2:
            easier = max(scores, key=scores.get)
            summary.value = (f"feature {scores['feature']:.2f}, neuron {scores['neuron']:.2f}: the "
                             f"<b>{easier}</b> was easier to predict from its explanation for you.")

    tabs = W.Tab(children=[round_widget(r, record) for r in rounds])
    for i, r in enumerate(rounds):
        tabs.set_title(i, f"round {i + 1}: a {r.kind}")
    return W.VBox([tabs, summary])
