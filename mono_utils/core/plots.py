"""Plotly figures for the foundation notebook (corpus, training curves, per-domain loss)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def corpus_mixture(manifest: dict) -> go.Figure:
    """Sunburst of token share: domain -> subdomain."""
    labels, parents, values = [], [], []
    for dom, d in sorted(manifest["domains"].items()):
        labels.append(dom)
        parents.append("")
        values.append(d["tokens"])
        for sub, s in sorted(d["subdomains"].items()):
            labels.append(f"{dom}/{sub}")
            parents.append(dom)
            values.append(s["tokens"])
    fig = go.Figure(go.Sunburst(labels=labels, parents=parents, values=values, branchvalues="total",
                                hovertemplate="%{label}: %{value:,} tokens (%{percentRoot:.1%})<extra></extra>"))
    fig.update_layout(title=f"Corpus mixture: {manifest['tokens']:,} tokens, {manifest['documents']:,} documents",
                      margin=dict(t=50, l=0, r=0, b=0), height=450)
    return fig


def _smooth(ys: list[float], k: int = 20) -> list[float]:
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc = y if i == 0 else acc + (y - acc) / min(i + 1, k)
        out.append(acc)
    return out


def training_curves(histories: dict[str, list[dict]], val: dict[str, float] | None = None) -> go.Figure:
    fig = go.Figure()
    for name, hist in histories.items():
        fig.add_scatter(x=[h["tokens"] for h in hist], y=_smooth([h["loss"] for h in hist]), name=f"model {name}")
    for name, v in (val or {}).items():
        fig.add_hline(y=v, line_dash="dot", annotation_text=f"{name} val {v:.2f}")
    fig.update_layout(title="Training loss (smoothed)", xaxis_title="tokens", yaxis_title="cross entropy (nats)",
                      height=380)
    return fig


class LiveLoss:
    """A FigureWidget that a training loop feeds through ``update(record)``."""

    def __init__(self, title: str = "Training loss (live)", every: int = 10):
        self.fig = go.FigureWidget(layout=dict(title=title, xaxis_title="tokens", yaxis_title="loss", height=350))
        self.fig.add_scatter(x=[], y=[], name="loss")
        self.every = every
        self.xs, self.ys = [], []

    def update(self, rec: dict) -> None:
        self.xs.append(rec["tokens"])
        self.ys.append(rec["loss"])
        if len(self.xs) % self.every == 0:
            with self.fig.batch_update():
                self.fig.data[0].x = self.xs
                self.fig.data[0].y = _smooth(self.ys)


def domain_loss(metrics: dict[str, dict]) -> go.Figure:
    """Grouped bars of validation loss per domain for each model."""
    fig = go.Figure()
    for name, m in metrics.items():
        doms = sorted(m["val_loss_by_domain"])
        fig.add_bar(x=doms, y=[m["val_loss_by_domain"][d] for d in doms], name=f"model {name}")
    fig.update_layout(barmode="group", title="Validation loss by domain (lower is easier to predict)",
                      yaxis_title="nats/token", height=380)
    return fig


def neuron_density(acts, title: str = "How often each MLP neuron fires") -> go.Figure:
    """Histogram over neurons of log10 firing frequency."""
    freq = (acts.reshape(-1, acts.shape[-1]) > 0).float().mean(0).numpy()
    fig = go.Figure(go.Histogram(x=np.log10(freq + 1e-7), nbinsx=40))
    fig.update_layout(title=title, xaxis_title="log10(fraction of tokens where the neuron is > 0)",
                      yaxis_title="neurons", height=330)
    return fig
