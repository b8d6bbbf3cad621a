"""Pictures of the proxy table (notebook 02): where each unit fires, and how well it detects the context.

- :func:`proxy_figure`: the best feature's and best neuron's activation histograms, coloured by
  the proxy, with each unit's best-F1 threshold.
- :func:`pr_figure`: both units' precision-recall curves (specificity against sensitivity as
  the threshold moves), with the points "on" (> 0) and best F1 marked.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.index import ActivationIndex
from .detection import pr_curve

_COLOURS = {"feature": "#2ca02c", "neuron": "#9467bd"}


def _rows(table, proxy: str):
    sub = table[table.proxy == proxy]
    if sub.empty:
        raise ValueError(f"proxy {proxy!r} is not in the table: choose one of {sorted(set(table.proxy))}")
    return sub


def proxy_figure(index: ActivationIndex, table, proxy: str, masks: dict, bins: int = 40):
    """Histograms of the best feature's and best neuron's non-zero activations, coloured by the proxy;
    a dashed line marks each unit's best-F1 threshold."""
    from plotly.subplots import make_subplots  # lazy: plotly is heavy: figures only
    sub = _rows(table, proxy)
    y = masks[proxy].reshape(-1)
    fig = make_subplots(rows=1, cols=len(sub), subplot_titles=[
        f"best {r.kind} {r.unit}: F1 {r.best_f1:.2f} (spec {r.specificity_at_t:.2f}, sens {r.sensitivity_at_t:.2f})"
        for r in sub.itertuples()])
    for c, r in enumerate(sub.itertuples(), start=1):
        pos, val = index.unit_entries(r.kind, r.unit)
        yy = y[pos]
        edges = np.linspace(0, float(val.max()) if len(val) else 1, bins + 1)
        for sel, name, col in ((yy, f"{proxy} (proxy on)", "#1f77b4"), (~yy, "other", "#ff7f0e")):
            h, _ = np.histogram(val[sel], edges)
            fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=h, name=name, marker_color=col, showlegend=c == 1,
                        row=1, col=c)
        if math.isfinite(r.threshold):     # the unit's best-F1 threshold: "on" is to its right
            fig.add_vline(x=r.threshold, line_dash="dash", line_color="black", row=1, col=c)
    fig.update_layout(barmode="stack", height=330, title=f"Activations coloured by the {proxy} proxy",
                      bargap=0, margin=dict(t=70))
    fig.update_yaxes(type="log", title_text="tokens")
    fig.update_xaxes(title_text="activation")
    return fig


def pr_figure(index: ActivationIndex, table, proxy: str, masks: dict, max_points: int = 400):
    """Specificity against sensitivity as each unit's threshold moves, for the best feature and neuron.

    A circle marks "on" (> 0), a star the best-F1 threshold. Where the feature's curve lies above
    the neuron's, the feature is the cleaner detector at that coverage.
    """
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    sub = _rows(table, proxy)
    y = masks[proxy].reshape(-1)
    fig = go.Figure()
    for r in sub.itertuples():
        precision, recall, _ = pr_curve(*index.unit_entries(r.kind, r.unit), y)
        keep = np.unique(np.linspace(0, len(recall) - 1, min(len(recall), max_points)).round().astype(int)) \
            if len(recall) else np.zeros(0, int)
        col = _COLOURS.get(r.kind, "#444")
        fig.add_scatter(x=recall[keep], y=precision[keep], mode="lines", line=dict(color=col),
                        name=f"{r.kind} {r.unit}")
        fig.add_scatter(x=[r.sensitivity], y=[r.specificity], mode="markers", showlegend=False,
                        marker=dict(color=col, size=10, symbol="circle-open", line=dict(width=2)),
                        hovertext=f"{r.kind} {r.unit} on (> 0)")
        fig.add_scatter(x=[r.sensitivity_at_t], y=[r.specificity_at_t], mode="markers", showlegend=False,
                        marker=dict(color=col, size=13, symbol="star"),
                        hovertext=f"{r.kind} {r.unit} best F1 {r.best_f1:.2f} at {r.threshold:.2f}")
    fig.update_layout(title=f"{proxy}: specificity against sensitivity (circle: on > 0; star: best F1)",
                      height=360, xaxis=dict(title="sensitivity P(unit on | context)", range=[0, 1.02]),
                      yaxis=dict(title="specificity P(context | unit on)", range=[0, 1.02]))
    return fig
