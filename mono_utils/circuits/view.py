"""Seeing an attribution graph: the top examples of its features and an interactive plotly figure
(offline: plotly's own bundle, no CDN) where hovering a feature shows where it fires most."""
from __future__ import annotations

import html

import numpy as np
import torch

from ..core.tokenizer import readable_tokens as token_strings  # a split letter whole, a stray byte as ‹xx› (as the atlas), not �
from ..core.transcoder import mlp_in_out
from .graph import AttributionGraph


@torch.no_grad()
def feature_examples(model, transcoder, tokenizer, tokens: np.ndarray, features, *, n: int = 4, before: int = 8,
                     after: int = 2, batch_rows: int = 32) -> dict[int, list[dict]]:
    """The ``n`` strongest activations of each transcoder feature in ``features`` over token rows
    ``tokens`` [rows, n_ctx] (e.g. held-out rows), each with its context: ``{feature: [{"activation",
    "row", "pos", "text"}]}``, the active token in ``text`` between [[ and ]]. Only the asked features'
    encoder columns are computed, so a few thousand rows take seconds."""
    feats = sorted({int(f) for f in features})
    if not feats:
        return {}
    if max(feats) >= transcoder.cfg.d_sae or min(feats) < 0:
        raise ValueError(f"feature ids must be in 0..{transcoder.cfg.d_sae - 1}, got {feats[:5]}...")
    idx = torch.tensor(feats)
    W, b, th = transcoder.W_enc[:, idx], transcoder.b_enc[idx], transcoder.threshold[idx]
    best_val = torch.full((n, len(feats)), -1.0)
    best_at = torch.zeros((n, len(feats)), dtype=torch.int64)
    n_ctx = tokens.shape[1]
    for s in range(0, len(tokens), batch_rows):
        tok = torch.from_numpy(tokens[s:s + batch_rows].astype(np.int64))
        x, _ = mlp_in_out(model, tok)
        pre = x.reshape(-1, x.shape[-1]).float() @ W + b
        act = torch.where(pre > th, pre, torch.zeros(())).relu()
        act[:: n_ctx] = 0                                   # position 0 is BOS: not an example
        flat = torch.arange(s * n_ctx, s * n_ctx + len(act))
        vals = torch.cat([best_val, act])
        at = torch.cat([best_at, flat[:, None].expand(-1, len(feats))])
        top = vals.topk(n, dim=0).indices
        best_val, best_at = vals.gather(0, top), at.gather(0, top)
    out = {}
    for c, f in enumerate(feats):
        rows = []
        for v, a in zip(best_val[:, c].tolist(), best_at[:, c].tolist()):
            if v <= 0:
                continue
            r, p = divmod(a, n_ctx)
            lo, hi = max(1, p - before), min(n_ctx, p + after + 1)
            parts = token_strings(tokenizer, tokens[r, lo:hi].tolist())
            k = p - lo
            text = "".join(parts[:k]) + "[[" + parts[k] + "]]" + "".join(parts[k + 1:])
            rows.append({"activation": v, "row": r, "pos": p, "text": text})
        out[f] = rows
    return out


def _layout(graph: AttributionGraph) -> dict[int, tuple[float, float]]:
    """x: the position; y: tokens at 0, features stacked above their position from 1, the error node
    of a position above its features, the logit on top, the biases at the left."""
    xy, stack = {}, {}
    per_pos = {}
    for n in graph.nodes:
        if n["kind"] == "feature":
            per_pos[n["pos"]] = per_pos.get(n["pos"], 0) + 1
    for i, n in enumerate(graph.nodes):
        if n["kind"] == "token":
            xy[i] = (n["pos"], 0.0)
        elif n["kind"] == "feature":   # rows of up to 5 around the position, strongest first
            k = stack.get(n["pos"], 0)
            stack[n["pos"]] = k + 1
            cols = min(per_pos[n["pos"]], 5)
            xy[i] = (n["pos"] + 0.19 * (k % cols - (cols - 1) / 2), 1.0 + 0.45 * (k // cols))
    top = max([y for _, y in xy.values()] + [1.0])
    for i, n in enumerate(graph.nodes):
        if n["kind"] == "error":
            xy[i] = (n["pos"] + 0.3, top + 0.5)
        elif n["kind"] == "bias":
            xy[i] = (-1.0, 1.0)
        elif n["kind"] == "logit":
            xy[i] = (n["pos"], top + 1.3)
    return xy


COLORS = {"token": "#6b7280", "feature": "#ea580c", "error": "#9ca3af", "bias": "#a3a3a3", "logit": "#2563eb"}


def graph_figure(graph: AttributionGraph, examples: dict | None = None, *, title: str | None = None):
    """A plotly figure of ``graph`` (prune it first: ``graph.prune(0.8)``): nodes by kind, edges blue
    (positive) or red (negative), thicker for larger |weight|. Hovering a node shows its value, its
    largest incoming edges and, for a feature, its top examples (``feature_examples``)."""
    import plotly.graph_objects as go  # lazy: plotly is heavy; figures only
    xy = _layout(graph)
    fig = go.Figure()
    w = np.abs(graph.weight)
    if len(w):
        cuts = np.quantile(w, [0.5, 0.85]) if len(w) > 2 else np.array([w.max(), w.max()])
        for sign, color in ((1, "rgba(37,99,235,0.55)"), (-1, "rgba(220,38,38,0.55)")):
            for level, width in enumerate((1.0, 2.5, 5.0)):
                lo = -np.inf if level == 0 else cuts[level - 1]
                hi = cuts[level] if level < 2 else np.inf
                sel = np.flatnonzero((np.sign(graph.weight) == sign) & (w > lo) & (w <= hi))
                if not len(sel):
                    continue
                xs, ys = [], []
                for e in sel:
                    (x0, y0), (x1, y1) = xy[int(graph.src[e])], xy[int(graph.dst[e])]
                    xs += [x0, x1, None]
                    ys += [y0, y1, None]
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=width),
                                         hoverinfo="skip", showlegend=False))
    into = {}
    for s, d, wt in zip(graph.src, graph.dst, graph.weight):
        into.setdefault(int(d), []).append((abs(wt), graph.nodes[int(s)]["label"], wt))
    for kind in ("token", "error", "bias", "feature", "logit"):
        ids = [i for i, n in enumerate(graph.nodes) if n["kind"] == kind]
        if not ids:
            continue
        hover, text = [], []
        for i in ids:
            n = graph.nodes[i]
            lines = [f"<b>{html.escape(n['label'])}</b>", f"value {n['value']:.3f}"]
            for _, label, wt in sorted(into.get(i, []), reverse=True)[:5]:
                lines.append(f"{wt:+.3f} from {html.escape(label)}")
            if kind == "feature" and examples and n["feature"] in examples:
                lines.append("<i>top examples:</i>")
                for ex in examples[n["feature"]][:4]:
                    lines.append(f"{ex['activation']:.2f}  {html.escape(repr(ex['text'])[1:-1])}")
            hover.append("<br>".join(lines))
            text.append(n["label"] if kind in ("token", "logit") else (f"F{n['feature']}" if kind == "feature" else ""))
        size = [10 + 14 * min(1.0, abs(graph.nodes[i]["value"]) / max(1e-9, max(abs(graph.nodes[j]["value"])
                                                                               for j in ids))) for i in ids]
        fig.add_trace(go.Scatter(x=[xy[i][0] for i in ids], y=[xy[i][1] for i in ids], mode="markers+text",
                                 customdata=[graph.nodes[i].get("feature", -1) if kind == "feature" else -1 for i in ids],
                                 marker=dict(size=size, color=COLORS[kind], line=dict(width=1, color="white")),
                                 text=text, textposition="bottom center" if kind == "token" else "top center",
                                 textfont=dict(size=10), hovertext=hover, hoverinfo="text", name=kind))
    fig.update_layout(title=title or f"attribution graph: {graph.node('logit')['label']} = {graph.logit:.3f}",
                      height=520, xaxis=dict(title="position", zeroline=False, dtick=1),
                      yaxis=dict(visible=False), hoverlabel=dict(align="left", font_size=11),
                      legend=dict(orientation="h", y=-0.15), margin=dict(t=60, l=20, r=20, b=40))
    return fig


def intervention_figure(table, r: float, *, title: str | None = None):
    """Predicted against actual logit change, one point per pinned feature, with the y = x line."""
    import plotly.graph_objects as go  # lazy: plotly is heavy; figures only
    lim = float(np.abs(np.r_[table.predicted.values, table.actual.values]).max()) * 1.1 or 1.0
    fig = go.Figure([go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line=dict(color="#9ca3af", dash="dot"),
                                name="y = x"),
                     go.Scatter(x=table.predicted, y=table.actual, mode="markers", name="one pin",
                                hovertext=[f"{p[:24]!r} F{f} pinned to {v:.2f}" for p, f, v in
                                           zip(table.prompt, table.feature, table["pinned to"])], hoverinfo="text+x+y")])
    fig.update_layout(title=title or f"pinning features: predicted vs actual change (r = {r:.3f}, {len(table)} pins)",
                      xaxis_title="predicted by the graph (frozen LayerNorm)", yaxis_title="actual (the model)",
                      height=420, width=560)
    return fig


def strongest_feature(graph: AttributionGraph) -> int | None:
    """The feature whose edge into the logit is largest in size (None: the graph has no feature there)."""
    into = graph.edges_into("logit")
    feats = [(abs(w), graph.node(src)["feature"]) for src, w in into.items() if graph.node(src)["kind"] == "feature"]
    return max(feats)[1] if feats else None


def graph_explorer(graph: AttributionGraph, examples: dict | None = None, dashboard_of=None, *,
                   title: str | None = None, open_first: bool = True):
    """``graph_figure`` as a widget: hover as there; a **click on a feature** opens its dashboard below the
    graph (``dashboard_of(feature)``: an HTML string or anything with ``_repr_html_``, e.g.
    ``circuits.interp.transcoder_dashboard``). ``open_first``: show the strongest feature's dashboard at
    once, so that an exported copy of the notebook (which has no kernel to click) shows one."""
    import ipywidgets as widgets  # lazy: widgets only in a notebook
    import plotly.graph_objects as go
    fig = go.FigureWidget(graph_figure(graph, examples, title=title))
    panel = widgets.HTML(value="<i>click a feature (orange) to open its dashboard here</i>")

    def show(feature: int) -> None:
        if dashboard_of is None or feature < 0:
            return
        panel.value = "<i>computing the dashboard of F%d...</i>" % feature
        out = dashboard_of(int(feature))
        body = out if isinstance(out, str) else out._repr_html_()
        panel.value = (f"<div style='margin:4px 0'><b>F{int(feature)}</b>, clicked in the graph "
                       f"(click another feature to replace it)</div>{body}")

    def on_click(trace, points, state):
        if points.point_inds:
            show(int(trace.customdata[points.point_inds[0]]))

    for trace in fig.data:
        if trace.name == "feature":
            trace.on_click(on_click)
    first = strongest_feature(graph) if open_first else None
    if first is not None:
        show(first)
    box = widgets.VBox([fig, panel])
    box.show_feature = show          # for a test, or a cell that opens a feature by its id
    return box
