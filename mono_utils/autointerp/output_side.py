"""The output side of a unit: what it does, explained, and scored the way its input side is.

The paper's **logit test** asks whether an explanation of what a unit fires on predicts the tokens it
promotes: 50 tokens from ranks 10-60 of its logit weights and 50 random ones, which plausibly follow?
(chance: 0.5). This module adds the other half of that square:

* an **output-side explanation** (:func:`output_explain_input`, then the backend's ``explain_output``),
  written from what the unit *does* and from nothing of where it fires: the 10 tokens whose logits
  it raises most and lowers most (the ranks the input side's explainer is shown too; the logit test
  asks about ranks 10-60, so neither explanation is given the answers), and its **measured effect**:
  the unit removed at each position where it fires in its 49 explanation examples, the change in the
  log-probability of the actual next token (the dashboards' ablation effect,
  ``features.dashboards.ablation_effects``, computed here through one short cut: in a one-layer
  model the MLP at a position writes only to that position's logits, so removing the unit there is
  the residual minus its activation times its output direction, through the final LayerNorm and the
  unembedding; :class:`EffectProbe`, tested equal to ``ablation_effects``). Pinning a unit
  (``steering``) would measure what it does where it is *not* active; removal measures what it
  contributes where it is, at the price of one forward pass over the rows (shared by every unit of a
  model through :class:`ResidualCache`), and is the cheaper.
* both explanations **scored the same two ways**: the simulation (:func:`~.protocol.score_simulation`
  on the same held-out examples; an output-side explanation is read backwards: active right before a
  token it helps predict) and the logit test (the same 100 tokens, the same labeller, the same
  accuracy). The input side's two numbers are the offline scores of ``run.get_offline_scores``; a
  third column asks the logit test of an input-side explanation written *without* the logits
  (``fires_only``): the offline explainer copies the top logits into its explanation, so with them its
  logit test may measure the copy; without them it asks whether what a unit fires on says what it
  promotes.

:func:`get_output_side` is the build stage (a cached result; ``output_side_units`` units per kind,
the offline scores' sample of them) and :func:`output_side_table` / :func:`output_side_figure` the
2 x 2 per dictionary that notebook 03 shows.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.model import W_U, W_out, model_config_of
from ..pipeline.models import get_model
from ..pipeline.presets import resolve
from ..pipeline.saes import get_paper_sae, get_sae
from .offline import OfflineBackend
from .protocol import (DeadUnitError, EvalCorpus, LogitInput, OutputExplainInput, ParseFailure, ProtocolConfig,
                       explain_input, logit_accuracy, logit_test_tokens, score_simulation, select_examples,
                       simulate_input, weighted_spearman)
from .run import (cached_frames, get_randomized_sae, preset_sources, sample_units,
                  source_identity, unit_seed, with_density_control)
from .scores import KIND_LABELS, median_ci

OUTPUT_SIDE_VERSION = 2   # 2: residuals read through a shared float16 cache (ResidualCache)
HOOK_FINAL_RESID = "ln_final.hook_in"    # the residual stream the final LayerNorm reads
LOGIT_CHANCE = 0.5                       # 50 promoted + 50 random tokens: any guess blind to the truth
SIMULATION_CHANCE = 0.0                  # a constant or random prediction
# units per kind the build scores (a sample of the live units, the same for the input side's numbers):
# each unit reads its explanation rows' residuals (cached per model) and is explained and scored twice; ~300 a
# kind was planned to keep default near 2 minutes of one thread
OUTPUT_SIDE_UNITS = {"smoke": 40}
DEFAULT_OUTPUT_SIDE_UNITS = 300


# ---------------------------------------------------------------- measuring the effect
class _Stop(Exception):
    pass


@torch.no_grad()
def final_residual(model, tokens: torch.Tensor) -> torch.Tensor:
    """[rows, n, d_model] float32: the residual stream the final LayerNorm reads (the forward pass stops there)."""
    box = {}

    def grab(act, hook):
        box["act"] = act.detach()
        raise _Stop
    try:
        model.run_with_hooks(tokens, fwd_hooks=[(HOOK_FINAL_RESID, grab)])
    except _Stop:
        pass
    return box["act"].float()


class ResidualCache:
    """Final residuals of whole rows of ``tokens`` [rows, n_ctx] through ``model``, computed on demand and kept
    (float16: 32 kB a row of 128 x 128) for every probe of that model on that corpus: scoring many units reads
    each row once instead of once per unit that drew it. The rounding to float16 (a relative 5e-4) is shared by
    the clean and the ablated prediction, so a measured effect moves by far less than its 0-9 level's step."""

    def __init__(self, model, tokens, batch_rows: int = 64):
        self.model, self.tokens, self.batch_rows = model, np.asarray(tokens), int(batch_rows)
        self._rows: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @torch.no_grad()
    def rows(self, row_ids) -> torch.Tensor:
        """[len(row_ids), n_ctx, d_model] float32."""
        row_ids = [int(r) for r in row_ids]
        missing = sorted(set(row_ids) - set(self._rows))
        for i in range(0, len(missing), self.batch_rows):
            chunk = missing[i:i + self.batch_rows]
            resid = final_residual(self.model, torch.as_tensor(self.tokens[chunk].astype(np.int64)))
            for r, x in zip(chunk, resid.half()):
                self._rows[r] = x
        return torch.stack([self._rows[r] for r in row_ids]).float()


class EffectProbe:
    """A unit's measured effect on the next token: removed where it fires, in a one-layer model.

    ``directions`` [units, d_model]: what each unit writes into the residual stream (a feature:
    ``W_dec_raw[i] @ W_out``; a neuron: ``W_out[i]``). Build one with :meth:`of`; :meth:`with_cache` shares
    a :class:`ResidualCache` between probes of one model (the build's many units).
    """

    def __init__(self, model, directions, batch_rows: int = 16, cache: ResidualCache | None = None):
        cfg = model_config_of(model)
        if cfg.n_layers != 1:
            raise ValueError(f"EffectProbe's short cut holds for a one-layer model only, not {cfg.n_layers} "
                             f"layers: use features.dashboards.ablation_effects")
        d = torch.as_tensor(np.asarray(directions, np.float32))
        if d.ndim != 2 or d.shape[1] != cfg.d_model:
            raise ValueError(f"directions must be [units, d_model={cfg.d_model}], got {tuple(d.shape)}")
        if cache is not None and cache.model is not model:
            raise ValueError("the residual cache belongs to another model: make one per model (ResidualCache(model, ...))")
        self.model, self.directions, self.batch_rows, self.cache = model, d, int(batch_rows), cache

    @classmethod
    @torch.no_grad()
    def of(cls, model, sae=None, **kw) -> "EffectProbe":
        """The probe of an SAE's features (``sae``) or of the model's neurons (``sae=None``)."""
        wo = W_out(model).detach().float()
        dirs = sae.W_dec_raw.detach().float() @ wo if sae is not None else wo
        return cls(model, dirs.numpy(), **kw)

    def with_cache(self, cache: ResidualCache | None) -> "EffectProbe":
        """The same probe reading whole rows through ``cache`` (rows named by their index in the cache's tokens)."""
        return EffectProbe(self.model, self.directions, self.batch_rows, cache)

    @torch.no_grad()
    def _log_probs(self, resid: torch.Tensor) -> torch.Tensor:
        logits = self.model.ln_final(resid) @ W_U(self.model).detach().float() + self.model.b_U.detach().float()
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def _residual_at(self, tokens: np.ndarray, pos: np.ndarray, row_ids) -> torch.Tensor:
        """[len(pos), d_model]: the residual at each (row, position) of ``pos``."""
        if self.cache is not None and row_ids is not None:
            rows = np.unique(pos[:, 0])
            resid = self.cache.rows(np.asarray(row_ids)[rows])
            where = np.searchsorted(rows, pos[:, 0])
            return resid[where, pos[:, 1]]
        # causal: a row is read up to its last needed position only; rows of like widths share a batch
        last = np.zeros(len(tokens), np.int64)
        np.maximum.at(last, pos[:, 0], pos[:, 1])
        rows = np.unique(pos[:, 0])
        rows = rows[np.argsort(last[rows], kind="stable")]
        r = torch.empty((len(pos), self.directions.shape[1]))
        for i in range(0, len(rows), self.batch_rows):
            chunk = rows[i:i + self.batch_rows]
            resid = final_residual(self.model, torch.as_tensor(tokens[chunk, :int(last[chunk].max()) + 1].astype(np.int64)))
            where = {int(row): k for k, row in enumerate(chunk)}
            sel = np.flatnonzero(np.isin(pos[:, 0], chunk))
            r[sel] = resid[[where[int(row)] for row in pos[sel, 0]], pos[sel, 1]]
        return r

    @torch.no_grad()
    def effects(self, unit: int, tokens, acts, row_ids=None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(next_effect, vocab_effect)`` of ``unit`` on token rows ``tokens`` [k, n_ctx] where it has
        activations ``acts`` [k, n_ctx] (zero where it should not be removed).

        ``next_effect[r, p]`` = log P(token p | clean) - log P(token p | unit removed at p - 1), as
        ``features.dashboards.ablation_effects`` (positive: the unit helped predict token p); 0 where
        the unit was silent at p - 1 and at p = 0. ``vocab_effect`` [d_vocab]: the mean change of every
        token's log-probability over those positions (None when there are none). ``row_ids`` [k]: the
        rows' indices in the probe's cache (``with_cache``), if it has one.
        """
        tokens = np.asarray(tokens)
        acts = np.asarray(acts, np.float32)
        if tokens.shape != acts.shape or tokens.ndim != 2:
            raise ValueError(f"tokens {tokens.shape} and acts {acts.shape} must be two [rows, n_ctx] arrays alike")
        out = np.zeros(tokens.shape, np.float32)
        pos = np.argwhere(acts[:, :-1] > 0)
        if len(pos) == 0:
            return out, None
        r = self._residual_at(tokens, pos, row_ids)
        a = torch.as_tensor(acts[pos[:, 0], pos[:, 1]])[:, None]
        clean, ablated = self._log_probs(r), self._log_probs(r - a * self.directions[int(unit)])
        nxt = torch.as_tensor(tokens[pos[:, 0], pos[:, 1] + 1].astype(np.int64))
        idx = torch.arange(len(pos))
        out[pos[:, 0], pos[:, 1] + 1] = (clean[idx, nxt] - ablated[idx, nxt]).numpy()
        return out, (clean - ablated).mean(0).numpy()


# ---------------------------------------------------------------- the output-side explainer's view
def _levels(values: np.ndarray) -> list[int]:
    """Values as 1-9 relative to the largest (the 0-9 display; a listed entry is at least 1)."""
    values = np.asarray(values, np.float64)
    top = float(values.max()) if len(values) else 0.0
    if top <= 0:
        return [1] * len(values)
    return np.clip(np.rint(9 * values / top), 1, 9).astype(int).tolist()


def effect_tables(next_tokens: np.ndarray, effects: np.ndarray, vocab_strs, n: int = 10, n_hurt: int = 5,
                  shrink: float = 1.0) -> tuple[list[list], list[list]]:
    """``(helped, hurt)``: ``[token, level]`` for the next tokens the unit helps (hurts) predict most.

    Tokens are ranked by their summed effect (nats; evidence grows with occurrences), levelled by
    their mean effect per occurrence shrunk towards 0 (``sum / (count + shrink)``: one sighting is
    weak evidence), 1-9 relative to the largest listed.
    """
    next_tokens = np.asarray(next_tokens, np.int64)
    effects = np.asarray(effects, np.float64)
    if len(next_tokens) == 0:
        return [], []
    ids, inv = np.unique(next_tokens, return_inverse=True)
    total = np.bincount(inv, effects, len(ids))
    mean = total / (np.bincount(inv, minlength=len(ids)) + shrink)
    out = []
    for sign, k in ((1, n), (-1, n_hurt)):
        order = np.lexsort((ids, -sign * total))
        pick = [i for i in order[:k] if sign * total[i] > 0]
        levels = _levels(sign * mean[pick]) if pick else []
        out.append([[vocab_strs[int(ids[i])], lv] for i, lv in zip(pick, levels)])
    return out[0], out[1]


def output_explain_input(logit_weights, vocab_strs, next_tokens=(), effects=(), contexts: int = 0,
                         cfg: ProtocolConfig = ProtocolConfig()) -> OutputExplainInput:
    """The output-side explainer's view: the ``cfg.logit_shown`` tokens whose logits the unit raises and
    lowers most (the ranks the input side's explainer sees; the logit test asks about ranks 10-60), levelled,
    and the measured effect on the next token (``effect_tables``)."""
    lw = np.asarray(logit_weights, np.float64)
    order = np.argsort(-lw, kind="stable")
    top = order[: cfg.logit_shown]
    bottom = order[::-1][: cfg.logit_shown]
    helped, hurt = effect_tables(next_tokens, effects, vocab_strs)
    return OutputExplainInput([vocab_strs[int(i)] for i in top], _levels(lw[top]),
                              [vocab_strs[int(i)] for i in bottom], helped, hurt, int(contexts))


def measured_effects(probe: EffectProbe | None, unit: int, acts: np.ndarray, corpus: EvalCorpus, ue):
    """``(next token ids, effects, vocab_effect)`` where the unit fires inside its explanation examples'
    windows (the text its explainer saw), through ``probe``; empty without a probe."""
    if probe is None:
        return np.zeros(0, np.int64), np.zeros(0), None
    rows = np.array([e.row for e in ue.explain], np.int64)
    masked = np.zeros((len(rows), corpus.tokens.shape[1]), np.float32)
    for i, e in enumerate(ue.explain):
        masked[i, e.start:e.start + len(e.acts)] = acts[e.row, e.start:e.start + len(e.acts)]
    tokens = corpus.tokens[rows]
    cached = probe.cache is not None and probe.cache.tokens is corpus.tokens     # rows named in that corpus
    eff, vocab_effect = probe.effects(unit, tokens, masked, row_ids=rows if cached else None)
    r, p = np.nonzero(masked[:, :-1] > 0)      # the last position has no next token in its row
    return tokens[r, p + 1].astype(np.int64), eff[r, p + 1].astype(np.float64), vocab_effect


# ---------------------------------------------------------------- one unit, both halves of the square
def run_unit_output(backend, acts, corpus: EvalCorpus, unit: int = 0, kind: str = "feature", logit_weights=None,
                    probe: EffectProbe | None = None, seed: int = 0, cfg: ProtocolConfig = ProtocolConfig(),
                    fires_only: bool = True, keep_prompts: bool = False) -> dict:
    """The output-side explanation of one unit, scored as the input side is; a dict (one table row).

    The examples are ``select_examples`` with the input side's seed (``run.unit_seed``), so the held-out
    simulation examples and the logit test's 100 tokens are the very ones its input side was scored on.
    ``out_spearman`` (headline) / ``out_spearman_raw`` / ``out_pearson``: the simulation from the output-side
    explanation; ``out_logit_accuracy``: its logit test; ``fires_only_logit_accuracy`` (``fires_only``): the
    logit test of an input-side explanation written without the logits; ``effect_vs_logits``: Spearman over
    the vocabulary between the logit weights and the measured mean change of every token's log-probability.
    """
    if logit_weights is None:
        raise ValueError("the output side needs the unit's logit weights (what it promotes): pass logit_weights")
    acts = np.asarray(acts, np.float32)
    row = {"unit": int(unit), "kind": kind, "status": "ok", "output_explanation": "",
           "out_spearman": np.nan, "out_spearman_raw": np.nan, "out_pearson": np.nan, "out_logit_accuracy": np.nan,
           "fires_only_logit_accuracy": np.nan, "effect_vs_logits": np.nan, "effect_positions": 0, "failures": 0}
    s = unit_seed(seed, unit)
    try:
        ue = select_examples(acts, corpus, s, cfg)
    except DeadUnitError:
        row["status"] = "dead"
        return row
    nxt, eff, vocab_effect = measured_effects(probe, unit, acts, corpus, ue)
    row["effect_positions"] = int(len(nxt))
    if vocab_effect is not None:
        if len(vocab_effect) != len(logit_weights):
            raise ValueError(f"the logit weights cover {len(logit_weights)} tokens but the probe's model has "
                             f"{len(vocab_effect)}: pass the logit weights of the probe's model")
        row["effect_vs_logits"] = weighted_spearman(np.asarray(logit_weights, np.float64), vocab_effect)
    oin = output_explain_input(logit_weights, corpus.vocab_strs, nxt, eff, len(nxt), cfg)
    test = logit_test_tokens(logit_weights, s, cfg)
    tokens = test.tokens(corpus.vocab_strs)
    if keep_prompts:
        row.update(examples=ue, output_input=oin, logit_test=test)
    try:
        text = backend.explain_output(oin)
        row["output_explanation"] = text
        sin = simulate_input(text, ue, corpus.vocab_strs)
        pred = backend.simulate(sin)
        sim = score_simulation(ue, pred)
        row.update(out_spearman=sim["spearman"], out_spearman_raw=sim["spearman_raw"], out_pearson=sim["pearson"])
        row["out_logit_accuracy"] = logit_accuracy(test, backend.label_logits(LogitInput(text, tokens)))
        if keep_prompts:
            row.update(simulate_input=sin, predictions=pred)
    except ParseFailure as e:
        row["status"], row["failures"] = f"failed: {e}", row["failures"] + 1
        return row
    if fires_only:
        try:
            plain = backend.explain(explain_input(ue, corpus.vocab_strs, None, cfg))
            row["fires_only_logit_accuracy"] = logit_accuracy(test, backend.label_logits(LogitInput(plain, tokens)))
            if keep_prompts:
                row["fires_only_explanation"] = plain
        except ParseFailure as e:
            row["failures"] += 1
            row["fires_only_failure"] = str(e)
    return row


def score_output_side(source, units, backend, probe: EffectProbe | None = None, *, seed: int = 0,
                      cfg: ProtocolConfig = ProtocolConfig(), fires_only: bool = True, progress: bool = True):
    """:func:`run_unit_output` for ``units`` of ``source`` (one row per unit, in order): a DataFrame."""
    units = [int(u) for u in units]
    if not units:
        raise ValueError("no units to score: pass a non-empty list of unit indices (e.g. sample_units(source, 50))")
    t0 = time.time()
    rows = [run_unit_output(backend, source.unit_acts(u), source.corpus, u, source.kind, source.logit_weights(u),
                            probe, seed, cfg, fires_only)
            for u in tqdm(units, desc=f"output side, {source.kind} units ({backend.name})", disable=not progress)]
    df = pd.DataFrame(rows)
    df.attrs["seconds"] = time.time() - t0
    df.attrs["backend"] = backend.name
    return df


# ---------------------------------------------------------------- sources, probes, the cached result
def output_side_units(preset) -> int:
    """Units per kind the build scores on the output side (a sample of the live units; see the module doc)."""
    n = OUTPUT_SIDE_UNITS.get(preset.name, DEFAULT_OUTPUT_SIDE_UNITS)
    return n if preset.autointerp_units is None else min(n, preset.autointerp_units)


def preset_probes(preset=None, store=None, kinds=None, progress: bool = True) -> dict:
    """``{kind: EffectProbe}`` for the kinds of ``run.preset_sources`` (the density-matched neurons share
    the neurons' probe): model A with A/1, its neurons and the paper recipe's features; the randomized
    model with its SAE."""
    p, s = resolve(preset, store)
    kinds = set(kinds) if kinds is not None else {"feature", "neuron", "neuron_at_density", "randomized",
                                                   "feature_paper2023"}
    model = get_model(p, s, which="A", progress=progress)
    out = {}
    if "feature" in kinds:
        out["feature"] = EffectProbe.of(model, get_sae(p, which="A", store=s, progress=progress))
    if kinds & {"neuron", "neuron_at_density"}:
        out["neuron"] = out["neuron_at_density"] = EffectProbe.of(model)
    if "randomized" in kinds:
        rmodel, rsae = get_randomized_sae(p, s, progress=progress, model=model)
        out["randomized"] = EffectProbe.of(rmodel, rsae)
    if "feature_paper2023" in kinds and p.sae_recipe != "paper2023":
        out["feature_paper2023"] = EffectProbe.of(model, get_paper_sae(p, s, which="A", progress=progress))
    return {k: v for k, v in out.items() if k in kinds}


def cached_output_side(sources: dict, probes: dict, n_units: int | None, seed: int = 0, store=None, *,
                       progress: bool = True, force: bool = False) -> dict:
    """``{kind: DataFrame}`` of :func:`score_output_side` with the offline backend on ``n_units`` live units
    of each source (``run.sample_units`` with ``seed``: the units the offline scores drew, or a sample of
    them), computed once and then loaded. ``probes``: ``{kind: EffectProbe}``, made from the same
    artifacts as the sources (their identity, which names the model and SAE, keys the result)."""
    missing = sorted(set(sources) - set(probes))
    if missing:
        raise ValueError(f"no effect probe for {missing}: pass probes for every source (preset_probes)")
    backend = OfflineBackend()
    config = {"sources": {k: source_identity(src) for k, src in sources.items()},
              "backend": {"name": backend.name, **{k: v for k, v in sorted(vars(backend).items())}},
              "protocol": asdict(ProtocolConfig()), "n_units": n_units, "seed": int(seed),
              "version": OUTPUT_SIDE_VERSION}

    def compute_frames():
        frames = {}
        # kinds of one model on one corpus share its residuals (each row read once), one model at a time
        key = {k: (id(probes[k].model), id(src.corpus.tokens)) for k, src in sources.items()}
        order = sorted(sources, key=lambda k: list(dict.fromkeys(key.values())).index(key[k]))
        cache = None
        for k in order:
            src = sources[k]
            if cache is None or (id(cache.model), id(cache.tokens)) != key[k]:
                cache = ResidualCache(probes[k].model, src.corpus.tokens)
            frames[k] = score_output_side(src, sample_units(src, n_units, seed), backend, probes[k].with_cache(cache),
                                          seed=seed, progress=progress)
        return {k: frames[k] for k in sources}     # in the sources' order, whatever order they were scored in

    return cached_frames("autointerp-output-side", config, compute_frames, store, force=force)


def get_output_side(preset=None, store=None, *, sources: dict | None = None, progress: bool = True) -> dict:
    """The build stage "autointerp output side": output-side explanations and scores of
    ``output_side_units(preset)`` units of every kind ``run.get_offline_scores`` scores (A/1's features,
    A's neurons, the neurons at the features' density, the randomized control, the paper recipe's
    features), drawn as the offline scores draw theirs (seed 0). Pass ``sources`` from ``preset_sources``
    if already loaded. Needs what the offline scores need."""
    p, s = resolve(preset, store)
    sources = with_density_control(sources if sources is not None else preset_sources(p, s, progress=progress))
    probes = preset_probes(p, s, kinds=sources, progress=progress)
    return cached_output_side(sources, probes, output_side_units(p), 0, s, progress=progress)


# ---------------------------------------------------------------- the 2 x 2, per dictionary
# column -> (which explanation, what it predicts, the score column, its source, chance)
SQUARE = {
    "input-side -> activations": ("input side (what it fires on)", "activations", "spearman", "input", SIMULATION_CHANCE),
    "input-side -> promoted tokens": ("input side (what it fires on)", "promoted tokens", "logit_accuracy", "input",
                                      LOGIT_CHANCE),
    "firing tokens only -> promoted tokens": ("input side, written without the logits", "promoted tokens",
                                              "fires_only_logit_accuracy", "output", LOGIT_CHANCE),
    "output-side -> activations": ("output side (what it does)", "activations", "out_spearman", "output",
                                   SIMULATION_CHANCE),
    "output-side -> promoted tokens": ("output side (what it does)", "promoted tokens", "out_logit_accuracy",
                                       "output", LOGIT_CHANCE),
}


def square_summary(inputs: dict, outputs: dict, n_boot: int = 2000, seed: int = 0):
    """Long form of the square: one row per (kind, cell) with ``n``, ``median``, ``low``, ``high``, ``chance``.

    ``inputs``: the offline scores (``get_offline_scores``), ``outputs``: :func:`get_output_side`. Each kind's
    input-side numbers are read on the units its output side scored (scored on both sides), so every
    cell of a row is over the same units.
    """
    rows = []
    for kind, out in outputs.items():
        if kind not in inputs:
            raise ValueError(f"no input-side scores for {kind!r}: pass the offline scores of the same sources")
        ok_out = out[out.status == "ok"].set_index("unit")
        inp = inputs[kind]
        ok_in = inp[inp.status == "ok"].set_index("unit")
        units = ok_out.index.intersection(ok_in.index)
        for cell, (explanation, predicts, col, side, chance) in SQUARE.items():
            frame = ok_in if side == "input" else ok_out
            vals = frame.loc[units, col].to_numpy(np.float64) if col in frame.columns else np.zeros(0)
            med, lo, hi = median_ci(vals, n_boot, seed)
            rows.append({"kind": kind, "units": KIND_LABELS.get(kind, kind), "cell": cell, "explanation": explanation,
                         "predicts": predicts, "n": int(np.isfinite(vals).sum()), "median": med, "low": lo,
                         "high": hi, "chance": chance})
    return pd.DataFrame(rows)


def output_side_table(inputs: dict, outputs: dict, digits: int = 2, n_boot: int = 2000, seed: int = 0):
    """The square per dictionary: a row per kind, a column per cell, ``median [low, high]`` (bootstrap 95%),
    and a last row with each cell's chance level."""
    long = square_summary(inputs, outputs, n_boot, seed)
    table = {}
    for (units, cell), g in long.groupby(["units", "cell"], sort=False):
        r = g.iloc[0]
        row = table.setdefault(units, {"units scored": int(r.n)})
        row[cell] = (f"{r['median']:.{digits}f} [{r['low']:.{digits}f}, {r['high']:.{digits}f}]" if r.n else "n/a")
    table["chance"] = {"units scored": "", **{c: f"{v[4]:.{digits}f}" for c, v in SQUARE.items()}}
    return pd.DataFrame.from_dict(table, orient="index")


def output_side_figure(inputs: dict, outputs: dict, title: str | None = None):
    """Two panels, "predicts activations" and "predicts promoted tokens": per dictionary, each explanation's
    median with its bootstrap 95% interval; chance as a dotted line."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    from plotly.subplots import make_subplots  # lazy: figures only
    long = square_summary(inputs, outputs)
    panels = [("activations", "predicts its activations (headline Spearman)", SIMULATION_CHANCE),
              ("promoted tokens", "predicts its promoted tokens (logit test accuracy)", LOGIT_CHANCE)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t, _ in panels], horizontal_spacing=0.08)
    colours = {"input side (what it fires on)": "#1f77b4", "input side, written without the logits": "#9ecae1",
               "output side (what it does)": "#ff7f0e"}
    shown = set()
    for col, (predicts, _, chance) in enumerate(panels, 1):
        part = long[long.predicts == predicts]
        for explanation, g in part.groupby("explanation", sort=False):
            fig.add_bar(x=g["units"], y=g["median"], name=explanation, marker_color=colours.get(explanation),
                        legendgroup=explanation, showlegend=explanation not in shown, row=1, col=col,
                        error_y=dict(type="data", symmetric=False, array=(g["high"] - g["median"]).round(4),
                                     arrayminus=(g["median"] - g["low"]).round(4)),
                        hovertemplate="%{x}: median %{y:.2f}<extra>" + explanation + "</extra>")
            shown.add(explanation)
        fig.add_hline(y=chance, line_dash="dot", line_color="#666", row=1, col=col,
                      annotation_text=f"chance {chance:g}", annotation_position="top right")
    fig.update_layout(barmode="group", height=460, title=title or "What it fires on and what it does: "
                      "each explanation scored both ways (median over units, bootstrap 95% interval)",
                      legend=dict(orientation="h", y=-0.35))
    fig.update_yaxes(title_text="median over units", col=1)
    return fig
