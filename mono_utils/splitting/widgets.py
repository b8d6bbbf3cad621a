"""Figures and widgets for notebook 05 (feature splitting): family trees, the UMAP map, a lineage picker."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from .family import SplitGraph

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def family_quality_figure(metrics_by_size: dict[int, dict]) -> go.Figure:
    """L0 and loss recovered of each dictionary size (from each SAE's ``metrics.json``)."""
    from plotly.subplots import make_subplots  # lazy: plotly is heavy: figures only
    sizes = sorted(metrics_by_size)
    labels = [f"{n:,}" for n in sizes]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["L0 (features active per token)", "loss recovered"])
    fig.add_bar(x=labels, y=[metrics_by_size[n]["l0"] for n in sizes], showlegend=False,
                marker_color=COLORS[0], row=1, col=1)
    fig.add_bar(x=labels, y=[100 * metrics_by_size[n]["loss_recovered"] for n in sizes], showlegend=False,
                marker_color=COLORS[2], row=1, col=2)
    fig.update_yaxes(title_text="%", row=1, col=2)
    fig.update_xaxes(title_text="dictionary size")
    fig.update_layout(height=300, title="The family: one lambda, growing dictionaries", margin=dict(t=70, b=40))
    return fig


def _label(hover, level, f) -> str:
    if hover is None:
        return ""
    try:
        return html.escape(str(hover[level][f]))
    except (KeyError, IndexError):
        return ""


def family_tree_figure(graph: SplitGraph, level: int, feature: int, hover: dict | None = None,
                       whole_family: bool = True) -> go.Figure:
    """The family tree containing (level, feature): x = dictionary size, leaves spread on y.

    ``hover``: {level: [text per feature]} (e.g. top tokens). The picked feature is outlined.
    """
    root = graph.root(level, feature) if whole_family else (level, feature)
    nodes = [(root[0], root[1], -1, 1.0)] + graph.descendants(*root)
    kids: dict = {}
    for lv, f, p, _ in nodes[1:]:
        kids.setdefault((lv - 1, p), []).append((lv, f))
    ypos, counter = {}, [0]

    def place(n):                       # tidy layout: leaves in DFS order, parents centred
        ch = kids.get(n, [])
        for c in ch:
            place(c)
        if ch:
            ypos[n] = float(np.mean([ypos[c] for c in ch]))
        else:
            ypos[n] = float(counter[0])
            counter[0] += 1

    place((root[0], root[1]))
    fig = go.Figure()
    ex, ey = [], []
    for lv, f, p, _ in nodes[1:]:
        ex += [lv - 1, lv, None]
        ey += [ypos[(lv - 1, p)], ypos[(lv, f)], None]
    fig.add_scatter(x=ex, y=ey, mode="lines", line=dict(color="#bbb"), hoverinfo="skip", showlegend=False)
    xs = [lv for lv, *_ in nodes]
    ys = [ypos[(lv, f)] for lv, f, *_ in nodes]
    text = [f"size {graph.sizes[lv]} feature {f}" + (f"<br>sim to parent {s:.2f}" if p >= 0 else "")
            + (f"<br>{_label(hover, lv, f)}" if hover is not None else "") for lv, f, p, s in nodes]
    picked = [(lv, f) == (level, feature) for lv, f, *_ in nodes]
    fig.add_scatter(x=xs, y=ys, mode="markers+text", text=[str(f) for _, f, *_ in nodes], textposition="top center",
                    hovertext=text, hoverinfo="text", showlegend=False,
                    marker=dict(size=[16 if p else 11 for p in picked], color=[COLORS[lv % len(COLORS)] for lv in xs],
                                line=dict(width=[3 if p else 0 for p in picked], color="black")))
    fig.update_xaxes(tickvals=list(range(len(graph.sizes))), ticktext=[f"{s} features" for s in graph.sizes],
                     range=[-0.5, len(graph.sizes) - 0.5])
    fig.update_yaxes(visible=False)
    fig.update_layout(height=max(260, 34 * counter[0] + 120), margin=dict(l=20, r=20, t=50, b=30),
                      title=f"Family of feature {root[1]} ({graph.sizes[root[0]]} features), "
                            f"links: activation cosine > {graph.threshold}")
    return fig


def umap_figure(layout, hover: dict | None = None, widget: bool = False):
    """The map of all features of all sizes (one trace per size). ``hover``: {size: [text per feature]}."""
    fig = go.FigureWidget() if widget else go.Figure()
    for k, (size, df) in enumerate(layout.groupby("size", sort=True)):
        text = [f"size {size} feature {f}" + (f"<br>{html.escape(str(hover[size][f]))}" if hover else "")
                for f in df["feature"]]
        fig.add_scattergl(x=df["x"], y=df["y"], mode="markers", name=f"{size} features", text=text,
                          customdata=np.stack([df["feature"].to_numpy(), np.full(len(df), size)], 1),
                          hovertemplate="%{text}<extra></extra>",
                          marker=dict(size=max(3, 9 - 1.5 * k), color=COLORS[k % len(COLORS)], opacity=0.7))
    fig.update_layout(height=560, title="UMAP of decoder directions (cosine, 15 neighbours), coloured by dictionary size",
                      xaxis=dict(visible=False), yaxis=dict(visible=False), legend=dict(itemsizing="constant"))
    return fig


def umap_explorer(layout, hover: dict | None, show_feature):
    """The UMAP map as a widget: clicking a point calls ``show_feature(size, feature)`` (returns HTML)."""
    import ipywidgets as W  # lazy: widgets only in a notebook
    fig = umap_figure(layout, hover, widget=True)
    out = W.HTML("<i>click a point to open its feature</i>")

    def on_click(trace, points, state):
        if points.point_inds:
            f, size = trace.customdata[points.point_inds[0]]
            out.value = show_feature(int(size), int(f))

    for tr in fig.data:
        tr.on_click(on_click)
    return W.VBox([fig, out])


def lineage_html(graph: SplitGraph, level: int, feature: int, hover: dict | None = None) -> str:
    anc = graph.ancestors(level, feature)
    desc = graph.descendants(level, feature)
    row = lambda lv, f, s: (f"<tr><td>{graph.sizes[lv]}</td><td>{f}</td><td>{s:.2f}</td>"  # noqa: E731
                            f"<td><code>{_label(hover, lv, f)}</code></td></tr>")
    head = "<tr><th>size</th><th>feature</th><th>sim</th><th>top tokens</th></tr>"
    a = "".join(row(lv, f, s) for lv, f, s in reversed(anc)) or "<tr><td colspan=4>(none: a root)</td></tr>"
    d = "".join(row(lv, f, s) for lv, f, _, s in desc) or "<tr><td colspan=4>(none: a leaf)</td></tr>"
    return (f"<div style='display:flex;gap:24px;font-size:12px'><div><b>ancestors</b><table>{head}{a}</table></div>"
            f"<div><b>descendants</b><table>{head}{d}</table></div></div>")


def lineage_widget(graph: SplitGraph, hover: dict | None = None, examples=None, start: tuple[int, int] | None = None):
    """Pick a size and a feature; see its family tree, ancestors and descendants.

    ``examples``: optional ``f(level, feature) -> HTML`` shown under the tree (top examples).
    """
    import ipywidgets as W  # lazy: widgets only in a notebook
    level0, feat0 = start or (0, 0)
    size = W.Dropdown(options=[(str(s), i) for i, s in enumerate(graph.sizes)], value=level0, description="size")
    feat = W.BoundedIntText(value=feat0, min=0, max=graph.sizes[level0] - 1, description="feature")
    fig = go.FigureWidget(family_tree_figure(graph, level0, feat0, hover))
    info = W.HTML()

    def show(*_):
        feat.max = graph.sizes[size.value] - 1
        lv, f = size.value, min(feat.value, feat.max)
        new = family_tree_figure(graph, lv, f, hover)
        with fig.batch_update():
            fig.data = []
            for tr in new.data:
                fig.add_trace(tr)
            fig.layout = new.layout
        info.value = lineage_html(graph, lv, f, hover) + (examples(lv, f) if examples else "")

    size.observe(show, "value")
    feat.observe(show, "value")
    show()
    return W.VBox([W.HBox([size, feat]), fig, info])
