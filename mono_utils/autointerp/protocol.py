"""Automated interpretability: explain a unit, simulate it from the explanation, score.

The protocol follows *Towards Monosemanticity* (see ``shared/reference/paper.md``):

* **Explanation examples** (:func:`select_examples`): the top interval, samples from 12
  other activation intervals, random contexts and the unit's top tokens in other contexts,
  with activations quantised to 0-9, plus the top/bottom logit tokens.
* **Simulation** on *held-out* examples only: a context (row) used for the explanation is
  never used for simulation. The simulator receives a :class:`SimulateInput`, which has no
  field for activations: it sees the explanation and the tokens, shuffled and unlabelled.
* **Scores**: importance-weighted Spearman (each simulated example weighted by its sampling
  stratum's population over its sample count, so the over-sampling of high intervals does
  not bias the score; a constant prediction scores 0) against the true activations on the
  0-9 scale the explainer saw (the headline), the same on raw activations, plain Spearman
  and plain Pearson as in Bills et al.; what the paper specifies and what it leaves open,
  and the detection score, are in :mod:`mono_utils.autointerp.scores`.
* **Logit test**: 50 tokens from ranks 10-60 of the unit's positive logits and 50 random
  tokens; the backend labels which plausibly follow; the score is its accuracy.

Backends share one interface (``explain``, ``simulate``, ``label_logits``, ``estimate``):
the offline baseline in :mod:`mono_utils.autointerp.offline`, the LLM ones (Anthropic,
OpenAI-compatible) in :mod:`mono_utils.autointerp.backends`; :mod:`mono_utils.autointerp.run`
scores many units and builds the randomized-transformer control. Everything here takes plain
arrays, so it is testable on tiny synthetic data.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..core.tokenizer import readable_each


# ---------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ProtocolConfig:
    """Counts from the paper: 49 explanation examples, 60 x 9-token simulation examples."""
    explain_top: int = 10
    explain_per_interval: int = 2
    explain_random: int = 5
    explain_top_token: int = 10
    sim_top: int = 6
    sim_per_interval: int = 2
    sim_random: int = 10
    sim_top_token: int = 20
    n_intervals: int = 12          # intervals below the top one
    explain_window: tuple[int, int] = (12, 4)  # tokens before / after the centre
    sim_window: tuple[int, int] = (6, 2)       # 9 tokens, as the paper
    n_top_tokens: int = 3          # distinct top tokens looked up in other contexts
    single_token_top: int = 20     # single-token: same token at the max of the top 20
    logit_shown: int = 10          # top/bottom logits the explainer sees
    logit_ranks: tuple[int, int] = (10, 60)
    logit_random: int = 50


@dataclass
class Example:
    row: int
    start: int
    centre: int
    token_ids: np.ndarray          # [w]
    acts: np.ndarray               # [w] float32 true activations
    source: str                    # "top", "interval k", "random", "top-token"
    stratum: str = ""              # for importance weights
    weight: float = 1.0

    def tokens(self, vocab_strs) -> list[str]:
        return [vocab_strs[int(t)] for t in self.token_ids]


@dataclass
class UnitExamples:
    explain: list[Example]
    simulate: list[Example]         # shuffled; weights set
    max_act: float
    top_token_ids: list[int]
    single_token: bool

    @property
    def explain_rows(self) -> set[int]:
        return {e.row for e in self.explain}

    @property
    def simulate_rows(self) -> set[int]:
        return {e.row for e in self.simulate}


@dataclass(frozen=True)
class ExplainInput:
    """What an explainer sees: tokens with 0-9 activations, interval labels, logits."""
    examples: list[dict]            # {"label": str, "tokens": [str], "acts": [int 0-9]}
    top_logits: list[str]
    bottom_logits: list[str]


@dataclass(frozen=True)
class SimulateInput:
    """What a simulator sees: an explanation and token lists. No activations, no labels."""
    explanation: str
    examples: list[list[str]]


@dataclass(frozen=True)
class LogitInput:
    explanation: str
    tokens: list[str]


@dataclass(frozen=True)
class OutputExplainInput:
    """What an output-side explainer sees (``autointerp.output_side``): what the unit does, no activations.

    ``top_logits`` / ``top_levels``: the tokens whose logits it raises most (the input side's explainer sees
    the same ranks), each 0-9 relative to the largest raise; ``bottom_logits``: those it lowers most;
    ``helped`` / ``hurt``: ``[token, level 0-9]`` pairs, the next tokens whose log-probability removing the
    unit lowers (raises) most per occurrence, measured at ``contexts`` positions where it fires.
    """
    top_logits: list[str]
    top_levels: list[int]
    bottom_logits: list[str]
    helped: list[list] = ()
    hurt: list[list] = ()
    contexts: int = 0


class ParseFailure(ValueError):
    """A backend's reply could not be parsed (counted as a failure, never a crash)."""


class DeadUnitError(ValueError):
    pass


# ---------------------------------------------------------------- corpus helper
class EvalCorpus:
    """Token rows plus per-token strings and an inverted index (token id -> positions)."""

    def __init__(self, tokens: np.ndarray, vocab_strs: list[str]):
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.size == 0:
            raise ValueError(f"tokens must be a non-empty [rows, n_ctx] array, got shape {tokens.shape}")
        if int(tokens.max()) >= len(vocab_strs):
            raise ValueError(f"token id {int(tokens.max())} is outside the vocabulary of {len(vocab_strs)} "
                             f"strings: pass the tokenizer that made these tokens")
        self.tokens = tokens
        self.vocab_strs = list(vocab_strs)
        flat = tokens.reshape(-1).astype(np.int64)
        self._order = np.argsort(flat, kind="stable")
        self._bounds = np.searchsorted(flat[self._order], np.arange(len(vocab_strs) + 1))

    @classmethod
    def from_tokenizer(cls, tokens, tokenizer) -> "EvalCorpus":
        # as the dashboards show tokens: a split byte as ‹d7›, not "�" (which all split bytes share)
        return cls(tokens, readable_each(tokenizer, range(len(tokenizer))))

    def positions_of(self, token_id: int) -> np.ndarray:
        """Flat positions (row * n_ctx + pos) where ``token_id`` occurs, ascending."""
        return self._order[self._bounds[token_id]:self._bounds[token_id + 1]]


# ---------------------------------------------------------------- example selection
def _window(centre: int, n_ctx: int, before: int, after: int) -> tuple[int, int]:
    width = min(before + after + 1, n_ctx)
    start = min(max(0, centre - before), n_ctx - width)
    return start, start + width


def _make(acts, tokens, row, centre, window, source) -> Example:
    s, e = _window(centre, acts.shape[1], *window)
    return Example(int(row), s, int(centre), np.asarray(tokens[row, s:e]).copy(),
                   np.asarray(acts[row, s:e], dtype=np.float32).copy(), source)


def select_examples(acts: np.ndarray, corpus: EvalCorpus, seed: int = 0,
                    cfg: ProtocolConfig = ProtocolConfig()) -> UnitExamples:
    """Choose explanation and held-out simulation examples for one unit.

    ``acts`` is the unit's activation on every token of ``corpus`` ([rows, n_ctx]). Each row
    gives at most one example, so explanation and simulation contexts never overlap.
    """
    acts = np.asarray(acts, dtype=np.float32)
    tokens = corpus.tokens
    if acts.shape != tokens.shape:
        raise ValueError(f"activations have shape {acts.shape} but tokens {tokens.shape}: pass the unit's "
                         f"activation on every token of the evaluation set")
    if not np.isfinite(acts).all():
        raise ValueError("activations hold NaN or Inf")
    rng = np.random.default_rng(seed)
    rows, n_ctx = acts.shape
    row_max = acts.max(1)
    row_arg = acts.argmax(1)
    max_act = float(row_max.max())
    if max_act <= 0:
        raise DeadUnitError("the unit never fires on the evaluation set (dead): leave dead units out "
                            "(e.g. index.is_dead) before scoring")
    active = np.flatnonzero(row_max > 0)
    active = active[np.lexsort((active, -row_max[active]))]
    used = np.zeros(rows, bool)
    explain: list[Example] = []
    sim: list[Example] = []

    # top interval: the best rows, split at random between explainer and simulator
    top = active[: cfg.explain_top + cfg.sim_top]
    perm = rng.permutation(len(top))
    n_sim_top = min(cfg.sim_top, len(top) // 2)
    for k, i in enumerate(perm):
        r = top[i]
        ex = _make(acts, tokens, r, row_arg[r], cfg.explain_window if k >= n_sim_top else cfg.sim_window, "top")
        (sim if k < n_sim_top else explain).append(ex)
        used[r] = True

    # other intervals: equal-width bins of each row's max activation below the top rows
    rest = active[len(top):]
    edges = np.linspace(0, max_act, cfg.n_intervals + 1)
    bin_of = np.clip(np.searchsorted(edges, row_max, side="left") - 1, 0, cfg.n_intervals - 1)
    for b in range(cfg.n_intervals - 1, -1, -1):
        members = rest[bin_of[rest] == b]
        if len(members) == 0:
            continue
        members = members[rng.permutation(len(members))]
        n_s = min(cfg.sim_per_interval, len(members) // 2)
        n_e = min(cfg.explain_per_interval, len(members) - n_s)
        label = f"interval {b + 1}/{cfg.n_intervals} ({edges[b]:.2g}-{edges[b + 1]:.2g})"
        for r in members[:n_s]:
            sim.append(_make(acts, tokens, r, row_arg[r], cfg.sim_window, label))
        for r in members[n_s:n_s + n_e]:
            explain.append(_make(acts, tokens, r, row_arg[r], cfg.explain_window, label))
        used[members[:n_s + n_e]] = True

    # top tokens: the tokens the unit peaks on in its top rows
    head = active[: cfg.single_token_top]
    peak_tokens = tokens[head, row_arg[head]].astype(np.int64)
    counts = Counter(peak_tokens.tolist())
    top_ids = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: cfg.n_top_tokens]
    single = len(counts) == 1

    # random contexts, then top tokens in other contexts (rows not used yet)
    def take_random(n, window, dest):
        free = np.flatnonzero(~used)
        for r in rng.choice(free, size=min(n, len(free)), replace=False):
            dest.append(_make(acts, tokens, r, int(rng.integers(n_ctx)), window, "random"))
            used[r] = True

    take_random(cfg.explain_random, cfg.explain_window, explain)
    take_random(cfg.sim_random, cfg.sim_window, sim)
    occ = np.concatenate([corpus.positions_of(t) for t in top_ids]) if top_ids else np.zeros(0, np.int64)
    occ = occ[rng.permutation(len(occ))]
    for n, window, dest in ((cfg.explain_top_token, cfg.explain_window, explain),
                            (cfg.sim_top_token, cfg.sim_window, sim)):
        taken = 0
        for flat in occ:
            if taken >= n:
                break
            r, p = divmod(int(flat), n_ctx)
            if used[r]:
                continue
            dest.append(_make(acts, tokens, r, p, window, "top-token"))
            used[r] = True
            taken += 1

    # importance weights: post-stratify the held-out rows by their max activation (interval bin,
    # "silent" or "top") and by whether they hold a top token, so that the over-sampled strata
    # (top rows, high intervals, top tokens out of context) count as much as they occur
    code = np.where(row_max > 0, bin_of, cfg.n_intervals)
    code[top] = cfg.n_intervals + 1
    has_top = np.zeros(rows, bool)
    has_top[occ // n_ctx] = True
    code = code * 2 + has_top
    base = [f"i{b}" for b in range(cfg.n_intervals)] + ["silent", "top"]
    names = [f"{b}{'+top-token' if t else ''}" for b in base for t in (0, 1)]
    held_out = np.ones(rows, bool)
    held_out[[e.row for e in explain]] = False
    population = np.bincount(code[held_out], minlength=len(names))
    sampled = Counter(int(code[e.row]) for e in sim)
    for e in sim:
        c = int(code[e.row])
        e.stratum, e.weight = names[c], float(population[c] / sampled[c])
    sim = [sim[i] for i in rng.permutation(len(sim))]
    return UnitExamples(explain, sim, max_act, top_ids, bool(single))


def quantise(acts: np.ndarray, max_act: float) -> np.ndarray:
    """Activations as integers 0-9 relative to ``max_act`` (the paper's display)."""
    if max_act <= 0:
        return np.zeros(np.shape(acts), np.int64)
    return np.clip(np.rint(9 * np.asarray(acts, np.float64) / max_act), 0, 9).astype(np.int64)


def explain_scale(ue: UnitExamples) -> float:
    """The activation shown as 9 to the explainer: the largest in its examples."""
    return max(float(e.acts.max()) for e in ue.explain) if ue.explain else ue.max_act


def explain_input(ue: UnitExamples, vocab_strs, logit_weights: np.ndarray | None = None,
                  cfg: ProtocolConfig = ProtocolConfig()) -> ExplainInput:
    """The explainer's view: explanation examples only (never a held-out one)."""
    scale = explain_scale(ue)
    exs = [{"label": e.source, "tokens": e.tokens(vocab_strs), "acts": quantise(e.acts, scale).tolist()}
           for e in ue.explain]
    top, bottom = [], []
    if logit_weights is not None:
        order = np.argsort(-np.asarray(logit_weights), kind="stable")
        top = [vocab_strs[int(i)] for i in order[: cfg.logit_shown]]
        bottom = [vocab_strs[int(i)] for i in order[::-1][: cfg.logit_shown]]
    return ExplainInput(exs, top, bottom)


def simulate_input(explanation: str, ue: UnitExamples, vocab_strs) -> SimulateInput:
    return SimulateInput(explanation, [e.tokens(vocab_strs) for e in ue.simulate])


# ---------------------------------------------------------------- scores
def weighted_rank(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks in cumulative-weight space (ties share the middle of their block)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    cum = np.r_[0.0, np.cumsum(ws)]
    mid = cum[starts] + (cum[ends] - cum[starts]) / 2
    out = np.empty(len(x))
    out[order] = np.repeat(mid, ends - starts)
    return out


def weighted_pearson(x, y, w=None) -> float:
    """Weighted Pearson correlation; 0 when either side is constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, np.float64)
    if not (x.shape == y.shape == w.shape) or x.ndim != 1:
        raise ValueError(f"x, y and w must be 1-D of one length, got {x.shape}, {y.shape}, {w.shape}")
    if len(x) == 0 or w.sum() <= 0:
        return 0.0
    w = w / w.sum()
    dx, dy = x - w @ x, y - w @ y
    vx, vy = w @ (dx * dx), w @ (dy * dy)
    scale = max(np.abs(x).max(), np.abs(y).max(), 1e-30) ** 2
    if vx <= 1e-12 * scale or vy <= 1e-12 * scale:
        return 0.0
    return float(np.clip(w @ (dx * dy) / np.sqrt(vx * vy), -1, 1))


def weighted_spearman(true, pred, w=None) -> float:
    """Spearman correlation with importance weights (a constant prediction scores 0)."""
    true = np.asarray(true, np.float64)
    w = np.ones_like(true) if w is None else np.asarray(w, np.float64)
    return weighted_pearson(weighted_rank(true, w), weighted_rank(pred, w), w)


MAX_PREDICTION = 10.0    # the prompt asks for 0-9; a 10 is tolerated, anything above is not a prediction


def check_predictions(values, where: str) -> np.ndarray:
    """One example's predicted activations as floats; anything but finite numbers in 0..10 is a ParseFailure.

    ``"NaN"``, NaN, -5, 1e308, ``"7"`` or ``true`` used to be coerced (clamped, parsed, cast) and scored
    as if the simulator had answered; now such a reply is a counted failure of its unit.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf":
            raise ParseFailure(f"{where}: predictions of type {values.dtype} are not numbers from 0 to 9")
        items = values.ravel().tolist()
    elif isinstance(values, (list, tuple)):
        items = list(values)
    else:
        raise ParseFailure(f"{where}: expected a list of numbers from 0 to 9, got {type(values).__name__}")
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ParseFailure(f"{where}: prediction {str(v)[:20]!r} ({type(v).__name__}) is not a number from 0 to 9")
        try:
            number = float(v)
        except OverflowError:       # an integer of 400 digits
            number = math.inf
        if not (math.isfinite(number) and 0 <= number <= MAX_PREDICTION):
            raise ParseFailure(f"{where}: prediction {str(v)[:20]} is not a number from 0 to 9")
    return np.asarray(items, np.float64)


def score_simulation(ue: UnitExamples, predictions: list) -> dict:
    """The simulation scores over all 540 tokens (``mono_utils.autointerp.scores`` says why each).

    ``spearman``: importance-weighted, the truth quantised to the 0-9 scale the explainer saw
    (the headline); ``spearman_raw``: the same on raw activations; ``spearman_unweighted``;
    ``pearson`` (Bills et al., unweighted, raw).
    """
    if len(predictions) != len(ue.simulate):
        raise ParseFailure(f"{len(predictions)} predicted examples for {len(ue.simulate)} simulated ones")
    true, pred, w = [], [], []
    for i, (e, p) in enumerate(zip(ue.simulate, predictions), 1):
        p = check_predictions(p, f"simulated example {i}")
        if p.shape != e.acts.shape:
            raise ParseFailure(f"an example of {len(e.acts)} tokens got {p.size} predictions")
        true.append(e.acts)
        pred.append(p)
        w.append(np.full(len(e.acts), e.weight))
    true, pred, w = (np.concatenate(a) if a else np.zeros(0) for a in (true, pred, w))
    return {"spearman": weighted_spearman(quantise(true, explain_scale(ue)), pred, w),
            "spearman_raw": weighted_spearman(true, pred, w), "pearson": weighted_pearson(true, pred),
            "spearman_unweighted": weighted_spearman(true, pred)}


@dataclass(frozen=True)
class LogitTest:
    token_ids: np.ndarray
    labels: np.ndarray              # True: from ranks 10-60 of the positive logits

    def tokens(self, vocab_strs) -> list[str]:
        return [vocab_strs[int(t)] for t in self.token_ids]


def logit_test_tokens(logit_weights: np.ndarray, seed: int = 0,
                      cfg: ProtocolConfig = ProtocolConfig()) -> LogitTest:
    """50 tokens from ranks 10-60 of the positive logits + 50 random others, shuffled."""
    lw = np.asarray(logit_weights, np.float64)
    lo, hi = cfg.logit_ranks
    if lw.ndim != 1 or len(lw) < hi + cfg.logit_random:
        raise ValueError(f"logit weights must be a vector over a vocabulary of >= {hi + cfg.logit_random} "
                         f"tokens, got shape {lw.shape}")
    rng = np.random.default_rng(seed)
    order = np.argsort(-lw, kind="stable")
    pos = order[lo:hi]
    rand = rng.choice(order[hi:], size=cfg.logit_random, replace=False)
    ids = np.r_[pos, rand]
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(rand), bool)]
    perm = rng.permutation(len(ids))
    return LogitTest(ids[perm], labels[perm])


def logit_accuracy(test: LogitTest, predicted) -> float:
    predicted = np.asarray(predicted, bool)
    if predicted.shape != test.labels.shape:
        raise ParseFailure(f"{predicted.size} logit labels for {test.labels.size} tokens")
    return float((predicted == test.labels).mean())
