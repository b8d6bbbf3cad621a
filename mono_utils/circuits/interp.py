"""The transcoder's features read as the suite reads A/1's: offline autointerp, the proxies, dashboards.

A transcoder feature reads the MLP's input and writes the MLP's output, so two things differ from A/1:
its logit weights are its decoder direction (in the residual stream) read by the unembedding
(``transcoder_logit_weights``), and its activation index (``get_transcoder_index``) holds a quarter of
A/1's tokens on larger presets. The index also holds model A's neurons on the *same* tokens, so every
table here puts the neurons on the transcoder's tokens beside the neurons on A/1's: where the two neuron
rows agree, the number of tokens is not what separates the dictionaries.
"""
from __future__ import annotations

import numpy as np

from ..autointerp.protocol import EvalCorpus
from ..autointerp.run import IndexSource, cached_offline_scores, default_n_units, get_offline_scores, logit_weight_matrix
from ..core.model import model_folder
from ..features.dashboards import Dashboard, dashboard_data
from ..features.proxies import cached_proxy_table, get_proxy_table, win_table
from ..pipeline.indexes import get_index
from ..pipeline.models import get_model, get_tokenizer
from ..pipeline.presets import resolve
from ..pipeline.transcoders import get_transcoder, get_transcoder_index, transcoder_logit_weights
from ..store.results import input_id

# the kinds of the score tables: A/1's run (notebook 03) and the transcoder's, each with its neurons
KINDS = {"feature": "A/1 features", "neuron": "neurons (A/1's tokens)",
         "transcoder": "transcoder features", "neuron_tc": "neurons (transcoder's tokens)",
         "transcoder_sampled": "transcoder features firing >= 20 times",
         "feature_sampled": "A/1 features firing >= 20 times"}
# A unit the index holds fewer firings of than this is scored on too few examples to explain: the protocol
# shows the explainer 20 top examples and holds out more for the simulation. The transcoder has many such
# features (in the default build of 0e06395 the median scored one fired 8 times in its 262,144 index tokens,
# A/1's 631 times in 524,288), so its scores are shown for all scored units (as A/1's) and for these well-sampled ones
MIN_FIRINGS = 20


def transcoder_sources(preset=None, store=None, *, progress: bool = True, model=None, transcoder=None) -> dict:
    """``{"transcoder": ..., "neuron_tc": ...}`` autointerp sources over the transcoder's index."""
    p, s = resolve(preset, store)
    model = model if model is not None else get_model(p, s, which="A", progress=progress)
    trc = transcoder if transcoder is not None else get_transcoder(p, s, which="A", progress=progress)
    index = get_transcoder_index(p, s, which="A", progress=progress, model=model)
    corpus = EvalCorpus.from_tokenizer(index.tokens, get_tokenizer(p, s))
    mid = input_id(model_folder(model))
    return {"transcoder": IndexSource(index, "feature", corpus.vocab_strs,
                                      transcoder_logit_weights(trc, model).cpu().numpy(), corpus,
                                      label="transcoder", logit_id=f"{mid}|{input_id(trc)}"),
            "neuron_tc": IndexSource(index, "neuron", corpus.vocab_strs, logit_weight_matrix(model), corpus,
                                     label="neuron_tc", logit_id=mid)}


def get_transcoder_interp(preset=None, store=None, *, progress: bool = True) -> dict:
    """The transcoder's features beside A/1's on the suite's two instruments, computed once, then loaded:

    - ``"scores"``: ``{kind: DataFrame}`` offline autointerp scores (every score of
      ``autointerp.scores``) of ``KINDS``: A/1's features and neurons from notebook 03's cached run,
      the transcoder's features and the neurons on the transcoder's index tokens;
    - ``"proxies"``: ``{"A/1": table, "transcoder": table}`` proxy tables (best unit per proxy,
      feature kind against neuron kind on each index), for ``features.proxies.win_table``.

    The build stage "transcoder autointerp" calls this; notebook 07 shows it.
    Needs: everything ``get_offline_scores`` needs, the transcoder and its index (built if missing).
    """
    p, s = resolve(preset, store)
    sources = transcoder_sources(p, s, progress=progress)
    tc_scores = cached_offline_scores(sources, default_n_units(p), 0, s, progress=progress)
    a1_scores = get_offline_scores(p, s, progress=progress)
    scores = {"feature": a1_scores["feature"], "neuron": a1_scores["neuron"], **tc_scores}
    # the same scores restricted to units the index holds >= MIN_FIRINGS firings of (both shown; see MIN_FIRINGS)
    a1_index = get_index(p, s, which="A", progress=progress)
    for kind, df, index in (("transcoder", tc_scores["transcoder"], sources["transcoder"].index),
                            ("feature", a1_scores["feature"], a1_index)):
        fired = index.firings("feature")[df["unit"].to_numpy()]
        scores[f"{kind}_sampled"] = df[fired >= MIN_FIRINGS].reset_index(drop=True)
    tc_table, _ = cached_proxy_table(sources["transcoder"].index, get_tokenizer(p, s), s, progress=progress)
    a1_table, _ = get_proxy_table(p, s, progress=progress)
    return {"scores": scores, "proxies": {"A/1": a1_table, "transcoder": tc_table}}


def interp_tables(record: dict, n_boot: int = 2000, seed: int = 0):
    """``(scores, wins)``: the score table (medians with bootstrap 95% intervals, a row per kind, named
    as in ``KINDS``) and the proxy wins (on how many proxies each dictionary's best feature beats the
    best neuron on its own index's tokens)."""
    from ..autointerp.scores import score_table  # the table helpers; plain pandas
    scores = score_table({KINDS.get(k, k): df for k, df in record["scores"].items()}, n_boot=n_boot, seed=seed)
    return scores, win_table(record["proxies"])


def transcoder_dashboard(index, transcoder, model, tokenizer, feature: int, **kw) -> Dashboard:
    """A transcoder feature's dashboard: its activations and top examples from the transcoder's index
    (``get_transcoder_index``), its logit weights through the unembedding. No ablation underlines:
    removing a transcoder feature means running the replacement model, not editing the MLP's activations."""
    lw = (transcoder.W_dec.detach()[int(feature)].float() @ model.W_U.detach().float()).cpu().numpy()
    data = dashboard_data(index, "feature", int(feature), model, tokenizer, logit_w=np.asarray(lw), ablation=False, **kw)
    data["kind"] = "transcoder feature"      # the dashboard's title
    return Dashboard(data)
