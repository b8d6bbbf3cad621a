"""Autointerp in the notebook: score distributions (plotly) and a backend / sample-size widget."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from .backends import get_backend
from .run import score_all, summarize
from .scores import KIND_LABELS, SCORES

GROUPS = KIND_LABELS   # one name per kind of unit, shared with the score tables
PAPER_LOGIT = {"feature": 0.74, "neuron": 0.53, "randomized": 0.50}
COLOURS = {"feature": "#1f77b4", "neuron": "#d62728", "randomized": "#7f7f7f", "neuron_at_density": "#ff7f0e",
           "feature_paper2023": "#2ca02c"}


def summary_table(results: dict):
    """Medians per kind, single-token features apart (the paper reports them separately)."""
    rows = []
    for kind, df in results.items():
        s = summarize(df)
        for part in ("multi_token", "single_token"):
            g = s[part]
            if g["n"] == 0:
                continue
            rows.append({"units": GROUPS.get(kind, kind), "part": part.replace("_", "-"), "n": g["n"],
                         "median Spearman": round(g["median_spearman"], 3),
                         "median Pearson": round(g["median_pearson"], 3),
                         "median logit accuracy": round(g["median_logit_accuracy"], 3),
                         "paper logit median": PAPER_LOGIT.get(kind, np.nan) if part == "multi_token" else np.nan,
                         "failed": s["failed"], "seconds": round(df.attrs.get("seconds", np.nan), 1)})
    return pd.DataFrame(rows)


def score_figure(results: dict, metric: str = "spearman", title: str | None = None):
    """Overlaid histograms of a score per kind (multi-token units), medians as dashed lines."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    fig = go.Figure()
    for kind, df in results.items():
        ok = df[(df.status == "ok") & ~df.single_token]
        vals = ok[metric].dropna().to_numpy()
        if len(vals) == 0:
            continue
        med = float(np.median(vals))
        colour = COLOURS.get(kind, None)
        fig.add_trace(go.Histogram(x=vals, name=f"{GROUPS.get(kind, kind)} (n={len(vals)}, median {med:.2f})",
                                   xbins=dict(start=-0.2, end=1.0, size=0.025), histnorm="probability",
                                   opacity=0.55, marker_color=colour))
        fig.add_vline(x=med, line_dash="dash", line_color=colour)
        single = df[(df.status == "ok") & df.single_token][metric].dropna()
        if len(single):
            fig.add_trace(go.Histogram(x=single, name=f"{GROUPS.get(kind, kind)}, single-token (n={len(single)})",
                                       xbins=dict(start=-0.2, end=1.0, size=0.025), histnorm="probability",
                                       opacity=0.35, marker_color=colour, marker_pattern_shape="/"))
    fig.update_layout(barmode="overlay", height=420, title=title or f"autointerp {metric} by unit kind",
                      xaxis_title=SCORES[metric][0] if metric in SCORES else metric,
                      yaxis_title="fraction of units", legend=dict(orientation="h", y=-0.25))
    return fig


def examples_html(result, vocab_strs, n: int = 6) -> str:
    """Held-out examples with true (blue) and simulated (orange) activations under each token."""
    ue = result.extra["examples"]
    pred = result.extra["predictions"]
    order = sorted(range(len(ue.simulate)), key=lambda i: -float(ue.simulate[i].acts.max()))[:n]
    scale = max(1e-9, float(max(e.acts.max() for e in ue.simulate)))
    rows = []
    for i in order:
        e, p = ue.simulate[i], np.asarray(pred[i], float)
        cells = []
        for t, a, q in zip(e.tokens(vocab_strs), e.acts, p):
            tb = f"rgba(31,119,180,{min(1, a / scale):.2f})"
            pb = f"rgba(255,127,14,{min(1, q / 9):.2f})"
            tok = html.escape(t.replace("\n", "\u21b5"))
            cells.append(f"<td style='padding:2px 4px;text-align:center'><div style='font-family:monospace;"
                         f"white-space:pre'>{tok}</div><div style='background:{tb}'>{a:.2f}</div>"
                         f"<div style='background:{pb}'>{q:.0f}</div></td>")
        rows.append(f"<tr><td style='color:#888'>{html.escape(e.source)}</td>{''.join(cells)}</tr>")
    return ("<table style='border-collapse:collapse;font-size:12px'>" + "".join(rows) + "</table>"
            "<div style='font-size:11px;color:#666'>under each token: true activation (blue), simulated 0-9 "
            "(orange); the simulator saw only the tokens and the explanation</div>")


def autointerp_widget(sources: dict, default_n: int = 50, results: dict | None = None):
    """Choose a backend and a sample size, run, and see the distributions and the summary."""
    import ipywidgets as W  # lazy: widgets only in a notebook
    from IPython.display import display  # lazy: display only in a notebook
    backend = W.Dropdown(options=["offline", "anthropic", "openai"], value="offline", description="backend")
    n = W.IntSlider(value=default_n, min=5, max=max(default_n, max(len(s.units) for s in sources.values())),
                    step=5, description="units/kind")
    model = W.Text(value="", placeholder="default model", description="model")
    base_url = W.Text(value="", placeholder="e.g. http://127.0.0.1:8000/v1", description="base_url")
    run = W.Button(description="score", button_style="primary")
    out = W.Output()
    state = {"results": results}

    def show():
        out.clear_output(wait=True)
        with out:
            if state["results"]:
                display(score_figure(state["results"]))
                display(summary_table(state["results"]))

    def on_run(_=None):
        out.clear_output(wait=True)
        with out:
            kw = {}
            if backend.value != "offline":
                if model.value.strip():
                    kw["model"] = model.value.strip()
                if base_url.value.strip():
                    kw["base_url"] = base_url.value.strip()
            try:
                b = get_backend(backend.value, **kw)
                state["results"] = score_all(sources, b, n.value)
            except (ValueError, ConnectionError, RuntimeError) as e:
                print(f"could not score: {e}")
                return
        show()

    run.on_click(on_run)
    show()
    box = W.VBox([W.HBox([backend, n, run]), W.HBox([model, base_url]), out])
    box.run = on_run
    box.controls = {"backend": backend, "n": n, "model": model, "base_url": base_url}
    box.state = state
    return box


def budget_figure(curve):
    """Median Spearman against the number of tokens an explanation may name (``budget_curve``)."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    fig = go.Figure()
    for kind, g in curve.groupby("kind", sort=False):
        colour = COLOURS.get(kind, None)
        fig.add_scatter(x=g["tokens named"], y=g["median"], mode="lines+markers", line=dict(color=colour),
                        name=f"{GROUPS.get(kind, kind)}: all")
        fig.add_scatter(x=g["tokens named"], y=g["median, multi-token"], mode="lines+markers",
                        line=dict(color=colour, dash="dot"), name=f"{GROUPS.get(kind, kind)}: multi-token")
    fig.update_layout(height=380, title="Shorter explanations: median score against tokens the explanation may name",
                      xaxis=dict(title="tokens named (log scale)", type="log"),
                      yaxis_title="median Spearman (importance-weighted)", legend=dict(orientation="h", y=-0.3))
    return fig


def scores_figure(summary, title: str = "every score, per kind: median and bootstrap 95% interval"):
    """Medians with their intervals, one group of bars per score (``scores.score_summary``)."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    fig = go.Figure()
    for kind, g in summary.groupby("kind", sort=False):
        fig.add_bar(x=[SCORES[s][0] if s in SCORES else s for s in g.score], y=g["median"],
                    error_y=dict(type="data", symmetric=False, array=g["high"] - g["median"],
                                 arrayminus=g["median"] - g["low"]),
                    name=f"{GROUPS.get(kind, kind)} (n={int(g.n.max())})", marker_color=COLOURS.get(kind))
    fig.update_layout(barmode="group", height=420, title=title, yaxis_title="median over units",
                      legend=dict(orientation="h", y=-0.3))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#999", annotation_text="detection chance",
                  annotation_position="top right")
    return fig
