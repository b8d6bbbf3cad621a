"""Score many units with an autointerp backend; the randomized-transformer control.

* :func:`run_unit` walks one unit through explain -> simulate -> score (+ the logit test).
* :func:`score_units` does it for a list of units (bounded concurrency for LLM backends,
  an estimate of calls and tokens first) and returns a DataFrame; :func:`summarize` gives
  medians per unit kind, single-token features apart as the paper reports them.
* Sources of activations: :class:`IndexSource` wraps the activation index
  (``mono_utils.index``); :class:`ArraySource` holds arrays (tests, small data);
  :class:`DensityMatchedSource` keeps each neuron's strongest activations only, at the
  features' density (the control of arXiv 2410.13928).
* :func:`randomized_model` shuffles each weight tensor of a trained model (the paper's
  control); :func:`get_randomized_index` trains an SAE on it and indexes its features.
* :func:`get_offline_scores` / :func:`cached_offline_scores`: the offline backend's scores of
  every source, kept as a cached result (``mono_utils.results``) so notebook 03 opens in seconds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..pipeline.indexes import get_index, index_source, sae_identity
from ..pipeline.models import get_model, get_tokenizer, get_tokens, model_artifact_config
from ..pipeline.presets import resolve
from ..pipeline.saes import (get_paper_sae, get_sae, sae_artifact_config, side_eval_preset, ultralow_cutoff,
                              ultralow_mask)
from ..core.activations import ActivationStream
from ..core.device import device_name, on_device, pick_device
from ..core.index import ActivationIndex, build_index
from ..core.metrics import evaluate_sae
from ..core.model import build_model, direction_logit_weights, model_config_of, model_folder
from ..core.sae import SparseAutoencoder
from ..core.train import train_sae
from ..store.results import cached_result, frame_from_json, frame_to_json, input_id
from .offline import OfflineBackend
from .protocol import (
    DeadUnitError,
    EvalCorpus,
    LogitInput,
    ParseFailure,
    ProtocolConfig,
    SimulateInput,
    explain_input,
    logit_accuracy,
    logit_test_tokens,
    score_simulation,
    select_examples,
    simulate_input,
)
from .backends import build_messages
from .scores import detection_score, explain_scale, select_detection


# ---------------------------------------------------------------- sources of activations
class ArraySource:
    """Activations in memory: ``acts`` maps unit -> [rows, n_ctx], or is [units, rows, n_ctx]."""

    def __init__(self, corpus: EvalCorpus, acts, logit_weights: np.ndarray | None = None, kind: str = "feature"):
        self.corpus, self.kind = corpus, kind
        self._acts = dict(acts) if isinstance(acts, dict) else {i: a for i, a in enumerate(acts)}
        self._logits = None if logit_weights is None else np.asarray(logit_weights)

    @property
    def units(self) -> list[int]:
        return sorted(self._acts)

    def unit_acts(self, unit: int) -> np.ndarray:
        if unit not in self._acts:
            raise ValueError(f"unit {unit} is not in this source (it has {len(self._acts)} units)")
        return np.asarray(self._acts[unit], np.float32)

    def logit_weights(self, unit: int):
        return None if self._logits is None else self._logits[unit]


class IndexSource:
    """One kind of unit ("feature" or "neuron") of an :class:`mono_utils.index.ActivationIndex`."""

    def __init__(self, index, kind: str, vocab_strs: list[str], logit_matrix: np.ndarray | None = None,
                 corpus: EvalCorpus | None = None, label: str | None = None, logit_id: str | None = None):
        self.index, self.index_kind, self.kind = index, kind, label or kind
        self.corpus = corpus or EvalCorpus(index.tokens, vocab_strs)
        self._logits = logit_matrix
        # names the artifacts the logit matrix came from, so cached scores need not hash it
        self.logit_id = logit_id

    @property
    def units(self) -> list[int]:
        return [int(u) for u in self.index.live_units(self.index_kind)]

    def unit_acts(self, unit: int) -> np.ndarray:
        return self.index.unit_acts(self.index_kind, unit)

    def logit_weights(self, unit: int):
        return None if self._logits is None else self._logits[unit]


class DensityMatchedSource:
    """Units of ``base`` sparsified to ``density``: each keeps only its ``round(density * tokens)``
    strongest activations (ties at the cut broken deterministically), the rest set to 0.

    The control for "features are more interpretable than neurons" that rules out density alone
    (arXiv 2410.13928 top-k sparsified neurons): :func:`with_density_control` sets ``density``
    to the median live feature's. Explanation, simulation and scores then see the sparsified
    activations only.
    """

    def __init__(self, base, density: float, label: str = "neuron_at_density"):
        if not 0 < float(density) <= 1:
            raise ValueError(f"density must be a fraction of tokens in (0, 1], got {density!r}")
        self.base, self.density, self.kind = base, float(density), label
        self.corpus = base.corpus

    @property
    def units(self) -> list[int]:
        return list(self.base.units)

    def unit_acts(self, unit: int) -> np.ndarray:
        acts = np.asarray(self.base.unit_acts(unit), np.float32)
        flat = acts.reshape(-1)
        keep = max(1, int(round(self.density * flat.size)))
        if int((flat > 0).sum()) <= keep:
            return acts
        top = np.argpartition(-flat, keep - 1, kind="introselect")[:keep]
        out = np.zeros_like(flat)
        out[top] = flat[top]
        return out.reshape(acts.shape)

    def logit_weights(self, unit: int):
        return self.base.logit_weights(unit)


def median_live_density(source) -> float:
    """The median fraction of tokens on which a live unit of ``source`` is active (> 0)."""
    if isinstance(source, IndexSource):
        d = source.index.density(source.index_kind)[source.units]
    else:
        d = [float((source.unit_acts(u) > 0).mean()) for u in source.units]
    if len(d) == 0:
        raise ValueError("the source has no live units: there is no density to match")
    return float(np.median(d))


def with_density_control(sources: dict, label: str = "neuron_at_density") -> dict:
    """``sources`` plus ``label``: the neurons at the median live feature's density."""
    if label in sources or "feature" not in sources or "neuron" not in sources:
        return dict(sources)
    return {**sources, label: DensityMatchedSource(sources["neuron"], median_live_density(sources["feature"]), label)}


@torch.no_grad()
def logit_weight_matrix(model, sae=None) -> np.ndarray:
    """Each unit's direct effect on the logits: [units, d_vocab] (features: W_dec_raw @ W_out @ W_U)."""
    import torch  # lazy: torch is heavy
    dirs = sae.W_dec_raw.detach() if sae is not None else torch.eye(model_config_of(model).d_mlp)
    return direction_logit_weights(model, dirs).cpu().numpy()


# ---------------------------------------------------------------- one unit
@dataclass
class UnitResult:
    unit: int
    kind: str
    status: str                     # "ok", "dead", "failed: ..."
    explanation: str = ""
    spearman: float = float("nan")              # the headline: weighted, truth on the 0-9 scale
    spearman_raw: float = float("nan")
    pearson: float = float("nan")
    spearman_unweighted: float = float("nan")
    detection: float = float("nan")             # balanced accuracy (autointerp.scores)
    logit_accuracy: float = float("nan")
    single_token: bool = False
    max_act: float = 0.0
    failures: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d.update({k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool))})
        return d


def unit_seed(seed: int, unit: int) -> int:
    """A per-unit seed: results do not depend on the order or concurrency of a run."""
    return int(np.random.SeedSequence([int(seed), int(unit)]).generate_state(1)[0])


def detection_seed(seed: int, unit: int) -> int:
    """The per-unit seed of the detection contexts (a stream apart from ``unit_seed``'s)."""
    return int(np.random.SeedSequence([int(seed), int(unit), 1]).generate_state(1)[0])


def run_unit(backend, acts, corpus: EvalCorpus, unit: int = 0, kind: str = "feature", logit_weights=None,
             seed: int = 0, cfg: ProtocolConfig = ProtocolConfig(), keep_prompts: bool = False,
             detection: bool = True) -> UnitResult:
    """Explain -> simulate -> score, and the logit test when ``logit_weights`` is given.

    ``detection``: also simulate a separate set of held-out contexts (one more simulator call)
    for the detection score; a reply that cannot be parsed there leaves it NaN and is counted
    in ``failures`` (``detection_failure`` says why), the other scores stand.
    """
    s = unit_seed(seed, unit)
    try:
        ue = select_examples(acts, corpus, s, cfg)
    except DeadUnitError:
        return UnitResult(unit, kind, "dead")
    res = UnitResult(unit, kind, "ok", single_token=ue.single_token, max_act=ue.max_act)
    ein = explain_input(ue, corpus.vocab_strs, logit_weights, cfg)
    if keep_prompts:
        res.extra.update(examples=ue, explain_input=ein)
    try:
        res.explanation = backend.explain(ein)
        sin = simulate_input(res.explanation, ue, corpus.vocab_strs)
        if keep_prompts:
            res.extra["simulate_input"] = sin
        pred = backend.simulate(sin)
        if keep_prompts:
            res.extra["predictions"] = pred
        res.__dict__.update(score_simulation(ue, pred))
    except ParseFailure as e:
        res.status, res.failures = f"failed: {e}", res.failures + 1
        return res
    if detection:
        det = select_detection(acts, corpus, ue, detection_seed(seed, unit))
        if keep_prompts:
            res.extra["detection_examples"] = det
        try:
            dpred = backend.simulate(SimulateInput(res.explanation, [e.tokens(corpus.vocab_strs) for e in det]))
            if keep_prompts:
                res.extra["detection_predictions"] = dpred
            d = detection_score(det, dpred, explain_scale(ue))
            res.detection = d.pop("detection")
            res.extra.update(d)
        except ParseFailure as e:
            res.failures += 1
            res.extra["detection_failure"] = str(e)
    if logit_weights is not None:
        test = logit_test_tokens(logit_weights, s, cfg)
        lin = LogitInput(res.explanation, test.tokens(corpus.vocab_strs))
        if keep_prompts:
            res.extra.update(logit_input=lin, logit_test=test)
        try:
            res.logit_accuracy = logit_accuracy(test, backend.label_logits(lin))
        except ParseFailure as e:
            res.failures += 1
            res.extra["logit_failure"] = str(e)
    return res


# ---------------------------------------------------------------- many units
def _check_units(units) -> list[int]:
    units = [int(u) for u in (units if units is not None else [])]
    if not units:
        raise ValueError("no units to score: pass a non-empty list of unit indices (e.g. "
                         "index.live_units('feature')[:100])")
    return units


def estimate_run(source, units, backend, seed: int = 0, cfg: ProtocolConfig = ProtocolConfig(),
                 n_samples: int = 3, detection: bool = False) -> dict:
    """Calls and tokens a run would need (LLM backends), from a few units' real prompts.

    ``detection``: add the detection simulation (one more call per unit, ``run_unit(detection=True)``).
    """
    units = _check_units(units)
    samples, det_inputs = [], []
    for u in units[:n_samples]:
        acts = source.unit_acts(u)
        try:
            ue = select_examples(acts, source.corpus, unit_seed(seed, u), cfg)
        except DeadUnitError:
            continue
        lw = source.logit_weights(u)
        ein = explain_input(ue, source.corpus.vocab_strs, lw, cfg)
        sin = SimulateInput("x" * 120, simulate_input("", ue, source.corpus.vocab_strs).examples)
        lin = LogitInput("x" * 120, ["token"] * (cfg.logit_ranks[1] - cfg.logit_ranks[0] + cfg.logit_random))
        samples.append((ein, sin, lin))
        if detection:
            det = select_detection(acts, source.corpus, ue, detection_seed(seed, u))
            det_inputs.append(SimulateInput("x" * 120, [e.tokens(source.corpus.vocab_strs) for e in det]))
    if not hasattr(backend, "provider"):
        return backend.estimate(len(units))
    est = backend.estimate(len(units), samples)
    if detection and det_inputs:
        chars = []
        for d in det_inputs:
            system, messages = build_messages("simulate", d)
            chars.append(len(system) + sum(len(m["content"]) for m in messages))
        out = [4 * sum(len(x) for x in d.examples) + 200 for d in det_inputs]
        est["calls"] += len(units)
        est["input_tokens"] += int(np.mean(chars) / 4 * len(units))
        est["output_tokens_max"] += int(np.mean(out) * len(units))
        est["note"] = est.get("note", "") + "; with one detection simulation per unit"
    return est


def score_units(source, units, backend, *, seed: int = 0, cfg: ProtocolConfig = ProtocolConfig(),
                logits: bool = True, progress: bool = True, verbose: bool = True, detection: bool = True):
    """Score ``units`` of ``source`` with ``backend``; a DataFrame, one row per unit (in order).

    LLM backends run ``backend.concurrency`` units at a time and print an estimate of calls
    and tokens first. A reply that cannot be parsed marks that unit "failed: ..." (counted in
    ``failures``); an endpoint that stays unreachable after the retries stops the run with
    :class:`~mono_utils.autointerp.backends.BackendUnavailableError` (finished calls are cached).
    """
    units = _check_units(units)
    if verbose and hasattr(backend, "provider"):
        est = estimate_run(source, units, backend, seed, cfg, detection=detection)
        print(f"[autointerp] {est['units']} units with {est['backend']} ({est['model']}): about {est['calls']} "
              f"calls, ~{est['input_tokens']:,} input tokens, <= {est['output_tokens_max']:,} output tokens "
              f"({est['note']})")

    def one(u):
        lw = source.logit_weights(u) if logits else None
        r = run_unit(backend, source.unit_acts(u), source.corpus, u, source.kind, lw, seed, cfg,
                     detection=detection)
        return r.to_dict()

    t0 = time.time()
    workers = max(1, int(getattr(backend, "concurrency", 1)))
    bar = tqdm(total=len(units), desc=f"autointerp {source.kind} units ({backend.name})", disable=not progress)
    rows = []
    if workers == 1:
        for u in units:
            rows.append(one(u))
            bar.update()
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(one, units):
                rows.append(r)
                bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    df.attrs["seconds"] = time.time() - t0
    df.attrs["backend"] = backend.name
    return df


def summarize(df) -> dict:
    """Median scores of scored units; features split into single-token and the rest."""
    ok = df[df.status == "ok"]
    out = {"units": int(len(df)), "scored": int(len(ok)), "failed": int(df.status.str.startswith("failed").sum()),
           "dead": int((df.status == "dead").sum())}
    groups = {"all": ok, "single_token": ok[ok.single_token], "multi_token": ok[~ok.single_token]}
    for name, g in groups.items():
        out[name] = {"n": int(len(g))}
        for col in ("spearman", "spearman_raw", "spearman_unweighted", "pearson", "detection", "logit_accuracy"):
            if col in g.columns:
                out[name][f"median_{col}"] = float(g[col].median()) if len(g) else float("nan")
    return out


# ---------------------------------------------------------------- the randomized control
@torch.no_grad()
def randomized_model(model, seed: int = 0):
    """A copy of ``model`` with the entries of every weight tensor shuffled (the paper's control).

    Each parameter (matrices, and also biases and LayerNorm vectors) keeps its own values in
    a random order, so weight distributions are unchanged and learned structure is gone.
    """
    cfg = model_config_of(model)   # a clear error for a model that build_model did not make
    new = build_model(cfg, tokenizer=getattr(model, "tokenizer", None))
    src = dict(model.named_parameters())
    g = torch.Generator().manual_seed(int(seed))
    for name, p in new.named_parameters():
        t = src[name].detach().cpu().reshape(-1)
        p.copy_(t[torch.randperm(t.numel(), generator=g)].reshape(p.shape))
    new.eval()
    new.mono_randomized_seed = int(seed)
    return new


def get_randomized_sae(preset=None, store=None, *, seed: int = 0, progress: bool = True, model=None,
                       **train_overrides):
    """``(randomized model A, its SAE)``: the paper's control, A/1's recipe on a quarter of its activations
    (all of them on ``paper``) with the side runs' evaluation (``pipeline.saes.side_eval_preset``), an artifact.

    ``model``: model A if already loaded (it is only shuffled, never changed).
    """
    p, s = resolve(preset, store)
    rmodel = randomized_model(model if model is not None else get_model(p, s, which="A", progress=progress), seed)
    model_cfg = model_artifact_config(p, "A")
    p = side_eval_preset(p)    # a side run: the smaller evaluation (the model's config above is the preset's own)
    if not p.side_runs_full:   # the control only needs its features' examples: a quarter of A/1's activations
        train_overrides.setdefault("total_tokens", max(p.sae_batch, p.sae_tokens // 4))
    # A/1's recipe and setting (preset.sae_recipe), so that the control differs from A/1 only in the model
    cfg, tc, _, _ = sae_artifact_config(p, which="A", seed=seed, **train_overrides)
    cfg = dataclasses.replace(cfg, model_name=f"mono-1l-A-randomized{seed}-{p.name}")
    sae_cfg = cfg.to_dict()
    sae_cfg.pop("input_scale")
    config = {"model": model_cfg, "randomize_seed": seed, "sae": sae_cfg, "train": tc.to_dict(),
              "eval": {"eval_tokens": p.eval_tokens, "density_tokens": p.density_tokens}, "version": 1}
    name = f"saeA-randomized{seed}-{p.sae_main}-{p.name}"

    def build(tmp):
        data = get_tokens(p, s)
        with on_device(rmodel, pick_device()) as dev:
            source = ActivationStream(rmodel, data.train, tc.batch_size, seed=seed, max_tokens=tc.total_tokens,
                                      device=dev)
            sae, hist = train_sae(cfg, source, tc, device=dev, progress=progress)
        sae = sae.cpu()
        sae.save(tmp)
        tv, _, _ = data.split("val")
        metrics = evaluate_sae(sae, rmodel, tv, p.eval_tokens, progress=progress, density_tokens=p.density_tokens)
        metrics.update(train_tokens=tc.steps * tc.batch_size, d_sae=p.sae_main, randomize_seed=seed,
                       train_device=device_name(dev))
        return metrics

    folder = s.get_or_build("sae-randomized", name, config, build)
    sae = SparseAutoencoder.load(folder)
    return rmodel, sae


def get_randomized_index(preset=None, store=None, *, seed: int = 0, progress: bool = True, model=None):
    """``(index, randomized model, its SAE)``: activations of the control's features and neurons."""
    p, s = resolve(preset, store)
    rmodel, sae = get_randomized_sae(p, s, seed=seed, progress=progress, model=model)
    config = {"sae": sae_identity(sae), "index_tokens": p.index_tokens, "version": 1}

    def build(tmp):
        toks, dom, sub, source, data = index_source(p, p.index_tokens, s)
        return build_index(rmodel, sae, toks, dom, sub, data.domain_names, data.subdomain_names, tmp,
                           progress=progress, meta={"which": f"A-randomized{seed}", "source": source})

    folder = s.get_or_build("index-randomized", f"indexA-randomized{seed}-{p.name}", config, build)
    index = ActivationIndex.load(folder)
    index.use_sae_ultralow(ultralow_mask(sae), ultralow_cutoff(sae))
    return index, rmodel, sae


def preset_sources(preset=None, store=None, randomized: bool = True, progress: bool = True,
                   paper: bool = True) -> dict:
    """``{"feature": ..., "neuron": ..., "randomized": ..., "feature_paper2023": ...}`` sources over the
    index tokens: A/1's features, A's neurons, the randomized control and, where A/1's recipe is not the
    paper's (``preset.sae_recipe``), the features of the paper's recipe at A/1's width and tokens."""
    p, s = resolve(preset, store)
    tok = get_tokenizer(p, s)
    model = get_model(p, s, which="A", progress=progress)
    sae = get_sae(p, which="A", store=s, progress=progress)
    index = get_index(p, which="A", store=s, progress=progress, sae=sae, model=model)
    corpus = EvalCorpus.from_tokenizer(index.tokens, tok)
    mid = input_id(model_folder(model))
    out = {"feature": IndexSource(index, "feature", corpus.vocab_strs, logit_weight_matrix(model, sae), corpus,
                                  logit_id=f"{mid}|{input_id(sae)}"),
           "neuron": IndexSource(index, "neuron", corpus.vocab_strs, logit_weight_matrix(model), corpus,
                                 logit_id=mid)}
    if randomized:
        rindex, rmodel, rsae = get_randomized_index(p, s, progress=progress, model=model)
        rcorpus = corpus if np.array_equal(rindex.tokens, index.tokens) else EvalCorpus(rindex.tokens, corpus.vocab_strs)
        # the randomized SAE's folder names model A's config and the shuffle seed
        out["randomized"] = IndexSource(rindex, "feature", corpus.vocab_strs, logit_weight_matrix(rmodel, rsae),
                                        rcorpus, label="randomized", logit_id=input_id(rsae))
    if paper and p.sae_recipe != "paper2023":
        psae = get_paper_sae(p, s, which="A", progress=progress)
        pindex = get_index(p, which="A", store=s, progress=progress, sae=psae, model=model)
        out["feature_paper2023"] = IndexSource(pindex, "feature", corpus.vocab_strs, logit_weight_matrix(model, psae),
                                               corpus, label="feature_paper2023", logit_id=f"{mid}|{input_id(psae)}")
    return out


def sample_units(source, n: int | None, seed: int = 0) -> list[int]:
    """``n`` live units of a source drawn at random (all of them when ``n`` is None), sorted."""
    units = np.asarray(source.units)
    if n is not None and n < len(units):
        units = np.sort(np.random.default_rng(seed).choice(units, size=n, replace=False))
    return [int(u) for u in units]


def score_all(sources: dict, backend, n_units: int | None = None, seed: int = 0, progress: bool = True,
              logits: bool = True) -> dict:
    """``{kind: DataFrame}`` for every source; ``n_units`` live units per kind (None: all)."""
    return {k: score_units(src, sample_units(src, n_units, seed), backend, seed=seed, progress=progress,
                           logits=logits)
            for k, src in sources.items()}


# ---------------------------------------------------------------- cached offline scores (notebook 03, the build)
OFFLINE_SCORES_VERSION = 3   # 2: every score of autointerp.scores, the density-matched neurons; 3: the
                             # explanation's context marks the active tokens (offline._marked)


def default_n_units(preset) -> int | None:
    """Units scored per kind in notebook 03 and the build: all live ones, a sample on ``paper``."""
    return preset.autointerp_units


def source_identity(src) -> dict:
    """What a source's scores depend on: its index folder, unit kind, logit matrix and vocabulary."""

    if isinstance(src, DensityMatchedSource):
        return {**source_identity(src.base), "label": src.kind, "density_matched": src.density}
    if not isinstance(src, IndexSource):
        raise ValueError(f"cached scores need sources over a stored activation index (IndexSource), not "
                         f"{type(src).__name__}: score it with score_all instead")
    logits = src.logit_id
    if logits is None and src._logits is not None:
        logits = "sha:" + hashlib.sha256(np.ascontiguousarray(src._logits).tobytes()).hexdigest()[:16]
    vocab = hashlib.sha256("\0".join(src.corpus.vocab_strs).encode("utf-8")).hexdigest()[:16]
    corpus = hashlib.sha256(np.ascontiguousarray(src.corpus.tokens).tobytes()).hexdigest()[:16]
    return {"index": input_id(src.index), "index_kind": src.index_kind, "label": src.kind, "logits": logits,
            "vocab": vocab, "corpus": corpus}


def _frame_to_parts(prefix: str, df) -> tuple[dict, dict]:
    """Numeric columns as arrays, text columns (explanations, status) as JSON."""
    num = [c for c in df.columns if df[c].dtype.kind in "biuf"]
    text = [c for c in df.columns if c not in num]
    return ({f"{prefix}.{c}": df[c].to_numpy() for c in num},
            {"columns": list(df.columns), "numeric": num, "text": frame_to_json(df[text]), "attrs": dict(df.attrs)})


def _frame_from_parts(prefix: str, arrays: dict, meta: dict):
    df = frame_from_json(meta["text"])
    for c in meta["numeric"]:
        df[c] = arrays[f"{prefix}.{c}"]
    df = df[meta["columns"]]
    df.attrs.update(meta["attrs"])
    return df


def cached_frames(name: str, config: dict, compute_frames, store=None, *, force: bool = False) -> dict:
    """``{kind: DataFrame}`` returned by ``compute_frames()``, computed once for ``config`` and then loaded
    (``store.results.cached_result``: numeric columns as arrays, text columns as JSON, kinds in order)."""
    def compute():
        frames = compute_frames()
        arrays, meta = {}, {"kinds": list(frames)}
        for k, df in frames.items():
            a, m = _frame_to_parts(k, df)
            arrays.update(a)
            meta[k] = m
        return arrays, meta

    arrays, meta = cached_result(name, config, compute, store, force=force)
    return {k: _frame_from_parts(k, arrays, meta[k]) for k in meta["kinds"]}


def cached_offline_scores(sources: dict, n_units: int | None = None, seed: int = 0, store=None, *,
                          backend=None, progress: bool = True, force: bool = False) -> dict:
    """``score_all(sources, offline backend, n_units, seed)``, computed once and then loaded.

    Only the offline backend is cached here: it is deterministic, so its scores are a function of
    the sources, its parameters and the seed. LLM backends cache their replies themselves (use
    ``score_all``).
    """
    backend = backend if backend is not None else OfflineBackend()
    if getattr(backend, "name", None) != "offline":
        raise ValueError(f"cached_offline_scores caches the offline backend only, not {backend.name!r}: "
                         f"use score_all (LLM replies are cached on disk by the backend)")
    config = {"sources": {k: source_identity(src) for k, src in sources.items()},
              "backend": {"name": backend.name, **{k: v for k, v in sorted(vars(backend).items())}},
              "protocol": asdict(ProtocolConfig()), "n_units": n_units, "seed": int(seed),
              "version": OFFLINE_SCORES_VERSION}

    return cached_frames("autointerp-offline", config, lambda: score_all(sources, backend, n_units, seed, progress),
                         store, force=force)


def get_offline_scores(preset=None, store=None, *, sources: dict | None = None, progress: bool = True) -> dict:
    """Offline autointerp scores of A/1's features, A's neurons, the randomized control, the
    neurons at the features' density (``with_density_control``) and the paper's recipe's features
    (where A/1 has another recipe), every score of each unit.

    The build stage and notebook 03 call this (``default_n_units`` units per kind, seed 0); pass
    ``sources`` from ``preset_sources`` if already loaded. Needs: tokenizer, model A, SAE A/1,
    index A/1, SAE randomized, index randomized, SAE and index A/1 paper2023 (built if missing).
    """
    p, s = resolve(preset, store)
    sources = sources if sources is not None else preset_sources(p, s, progress=progress)
    sources = with_density_control(sources)
    return cached_offline_scores(sources, default_n_units(p), 0, s, progress=progress)
