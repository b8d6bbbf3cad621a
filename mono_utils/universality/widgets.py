"""Figures and widgets for notebook 04 (universality): histograms, scatters, a matched-pair browser."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..features.dashboards import dashboard, readable_vocab, show_token, side_by_side
from .compare import UniversalityResult, examples_html, logit_weights

PAPER_MEDIANS = {"features": 0.72, "neurons": 0.46}


def max_corr_histogram(res: UniversalityResult) -> go.Figure:
    """Distribution of each A unit's max correlation with any B unit: features vs neurons."""
    fig = go.Figure()
    for name, m, col in (("features", res.features, "#ff6400"), ("neurons", res.neurons, "#1f77b4")):
        v = m.live_max_corr
        fig.add_histogram(x=v, name=f"{name} (median {m.median:.2f}, n={len(v)})", histnorm="probability",
                          xbins=dict(start=0, end=1.0001, size=0.025), marker_color=col, opacity=0.6)
        fig.add_vline(x=m.median, line_color=col, line_dash="dash")
        fig.add_vline(x=PAPER_MEDIANS[name], line_color=col, line_dash="dot", opacity=0.5,
                      annotation_text=f"paper {name} {PAPER_MEDIANS[name]}", annotation_position="top left")
    fig.update_layout(barmode="overlay", height=380, xaxis_title="max Pearson correlation with any unit of model B",
                      yaxis_title="fraction of units", legend=dict(x=0.01, y=0.99),
                      title=f"Universality: {res.features.n_tokens:,} tokens; "
                            f"{res.features.n_excluded_a} A features excluded (never fire)")
    return fig


def similarity_scatter(res: UniversalityResult, max_points: int = 5000, seed: int = 0) -> go.Figure:
    """Activation similarity vs logit-weight similarity and vs attribution similarity (matched pairs)."""
    idx = np.flatnonzero(res.features.live_a)
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    act = res.features.max_corr[idx]
    fig = make_subplots(1, 2, subplot_titles=("logit-weight similarity", "attribution similarity"),
                        shared_yaxes=False)
    hover = [f"A/{i} <-> B/{j}" for i, j in zip(idx, res.features.match[idx])]
    for c, (y, name) in enumerate(((res.logit_sim[idx], "logit weights"), (res.attribution_sim[idx], "attribution")), 1):
        fig.add_scatter(x=act, y=y, mode="markers", marker=dict(size=4, opacity=0.5), name=name, text=hover,
                        hovertemplate="%{text}<br>activation %{x:.2f}<br>" + name + " %{y:.2f}<extra></extra>",
                        row=1, col=c)
        fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#999"), showlegend=False,
                        hoverinfo="skip", row=1, col=c)
        fig.update_xaxes(title_text="activation similarity (max correlation)", range=[-0.05, 1.05], row=1, col=c)
        fig.update_yaxes(range=[-1.05, 1.05], row=1, col=c)
    fig.update_layout(height=420, showlegend=False,
                      title="Matched pairs: does what a feature does agree with when it fires?")
    return fig


def shared_logit_tokens(res: UniversalityResult, i: int, model_a, model_b, sae_a, sae_b, vocab: list[str],
                        k: int = 20) -> list[str]:
    """Tokens among the top-k positive logit weights of both A feature i and its B match."""
    import torch  # lazy: torch is heavy
    j = int(res.features.match[i])
    if j < 0:
        return []
    la = logit_weights(model_a, sae_a.W_dec_raw[i:i + 1].detach())[0]
    lb = logit_weights(model_b, sae_b.W_dec_raw[j:j + 1].detach())[0]
    ta, tb = torch.topk(la, k).indices.tolist(), set(torch.topk(lb, k).indices.tolist())
    return [show_token(vocab[t]) for t in ta if t in tb]


def pair_html(res: UniversalityResult, i: int, model_a, model_b, sae_a, sae_b, tokenizer, index_a=None,
              index_b=None, ablation: bool = False) -> str:
    """A feature of A and its best match in B, side by side (dashboards when indexes are given)."""
    vocab = readable_vocab(tokenizer)   # shown as the atlas shows them: a split byte as ‹xx›, not �
    j = int(res.features.match[i])
    if j < 0:
        return f"<div>A feature {i} never fires on these tokens: it has no match (excluded).</div>"
    shared = shared_logit_tokens(res, i, model_a, model_b, sae_a, sae_b, vocab)
    head = (f"<div style='font-size:14px'><b>A/1 feature {i} &harr; B/1 feature {j}</b>: activation correlation "
            f"<b>{res.features.max_corr[i]:.3f}</b>, logit-weight similarity {res.logit_sim[i]:.3f}, "
            f"attribution similarity {res.attribution_sim[i]:.3f}; density A {res.density_a[i]:.2g}, "
            f"B {res.density_b[j]:.2g}</div><div>shared top-20 logit tokens: "
            f"<code>{html.escape(' '.join(shared)) or '(none)'}</code></div>")
    if index_a is not None and index_b is not None:
        da = dashboard(index_a, "feature", i, model_a, tokenizer, sae_a, ablation=ablation, n_intervals=5, per_interval=1)
        db = dashboard(index_b, "feature", j, model_b, tokenizer, sae_b, ablation=ablation, n_intervals=5, per_interval=1)
        return head + side_by_side(da, db)
    ea = examples_html(res.acts_a.tocsc() if res.acts_a.format != "csc" else res.acts_a, i, res.tokens, vocab,
                       title=f"A/1 feature {i}: top examples")
    eb = examples_html(res.acts_b.tocsc() if res.acts_b.format != "csc" else res.acts_b, j, res.tokens, vocab,
                       title=f"B/1 feature {j}: top examples")
    return head + f"<div style='display:flex;gap:16px;flex-wrap:wrap'><div>{ea}</div><div>{eb}</div></div>"


def pair_browser(res: UniversalityResult, model_a, model_b, sae_a, sae_b, tokenizer, index_a=None, index_b=None,
                 named=None):
    """Browse matched pairs: order by correlation (high/low/random) or jump to a named feature."""
    import ipywidgets as W  # lazy: widgets only in a notebook
    live = np.flatnonzero(res.features.live_a)
    if not len(live):
        raise ValueError("no live A feature to browse")
    orders = {"most correlated first": live[np.argsort(-res.features.max_corr[live], kind="stable")],
              "least correlated first": live[np.argsort(res.features.max_corr[live], kind="stable")],
              "random": np.random.default_rng(0).permutation(live)}
    order = W.Dropdown(options=list(orders), description="order")
    rank = W.IntSlider(0, 0, len(live) - 1, description="rank", continuous_update=False)
    opts = [("(by rank)", -1)] + [(f"{r['label']} -> A/{r['feature_A']}", int(r["feature_A"]))
                                  for _, r in (named.iterrows() if named is not None else [])]
    jump = W.Dropdown(options=opts, description="named")
    out = W.HTML()

    def show(*_):
        i = jump.value if jump.value >= 0 else int(orders[order.value][rank.value])
        out.value = pair_html(res, i, model_a, model_b, sae_a, sae_b, tokenizer, index_a, index_b)

    for w in (order, rank, jump):
        w.observe(show, "value")
    show()
    return W.VBox([W.HBox([order, rank, jump]), out])
