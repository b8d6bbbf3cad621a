"""Plotly figures for the foundation notebook (corpus, training curves, per-domain loss), and
``figure_html``: any figure as HTML that draws itself offline outside Jupyter (nbconvert, the HTML export)."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

_FIGURE_SERIAL = itertools.count()


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


# ---------------------------------------------------------------- figures outside Jupyter
# A notebook output of a plotly figure carries only its JSON (application/vnd.plotly.v1+json), which
# Jupyter draws and nbconvert's HTML, GitHub and most readers leave blank. ``figure_html`` is the same
# figure as HTML that draws itself with plotly.js: from ``window.Plotly`` when the page already has it
# (the HTML export inlines it once per page), else from ``plotly.min.js`` beside the page (loaded once,
# however many figures), else a line that says how to get a self-contained page. Never a CDN.
PLOTLY_JS_NAME = "plotly.min.js"
FIGURE_HTML_CLASS = "mono-plotly"


def plotly_js_path() -> Path:
    """The plotly.js bundle that ships inside the plotly package (offline, the version plotly.py draws with)."""
    import plotly  # lazy: only to locate the bundle
    path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall plotly (pip install --force-reinstall "
                                f"plotly) to get its offline bundle")
    return path


def copy_plotly_js(folder: str | Path) -> Path:
    """Put ``plotly.min.js`` into ``folder`` (for pages whose figures load it from beside them)."""
    src, dst = plotly_js_path(), Path(folder) / PLOTLY_JS_NAME
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)      # atomic: a half-copied bundle would break every page beside it
    return dst


_LOADER = """<script>(function () {
  var el = document.getElementById(%(id)s), fig = %(fig)s;
  function draw() {
    el.textContent = '';
    window.Plotly.newPlot(el, fig.data || [], fig.layout || {}, Object.assign({responsive: true, displaylogo: false}, fig.config || {}));
  }
  if (window.Plotly) { draw(); return; }
  var q = window.__monoPlotlyQueue = window.__monoPlotlyQueue || [];
  q.push(draw);
  if (q.length > 1) return;
  var amd = window.define; window.define = undefined;   /* plotly.js registers as an AMD module when require.js is on the page */
  var s = document.createElement('script');
  s.src = %(src)s;
  s.onload = function () { window.define = amd; q.splice(0).forEach(function (f) { f(); }); };
  s.onerror = function () {
    window.define = amd;
    document.querySelectorAll('.%(cls)s-missing').forEach(function (m) { m.style.display = 'block'; });
  };
  document.head.appendChild(s);
})();</script>"""


def figure_html(fig, div_id: str | None = None) -> str:
    """``fig`` (a plotly Figure or its JSON dict) as an HTML snippet that draws it offline (see above)."""
    import plotly.io as pio  # lazy: plotly.io imports pandas and more
    spec = json.loads(pio.to_json(fig, validate=False)) if hasattr(fig, "to_plotly_json") else dict(fig)
    if not isinstance(spec, dict) or not isinstance(spec.get("data", []), list):
        raise ValueError(f"not a plotly figure: expected a Figure or a dict with 'data' and 'layout', "
                         f"got {type(fig).__name__}")
    if div_id is None:   # the same figure shown twice on a page needs two ids
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        div_id = f"mono-plotly-{digest}-{next(_FIGURE_SERIAL)}"
    height = (spec.get("layout") or {}).get("height") or 450
    safe = lambda obj: json.dumps(obj).replace("</", "<\\/")  # noqa: E731 - a "</script>" in a label must not end the script
    missing = (f"<div class='{FIGURE_HTML_CLASS}-missing' style='display:none;color:#a00;font-family:sans-serif'>"
               f"This plotly figure needs {PLOTLY_JS_NAME} beside this page, or a self-contained page: "
               f"python -m mono_utils.html_export NOTEBOOK.ipynb</div>")
    return (f"<div class='{FIGURE_HTML_CLASS}' id='{div_id}' style='width:100%;min-height:{int(height)}px'></div>"
            + missing + _LOADER % {"id": safe(div_id), "fig": safe(spec), "src": safe(PLOTLY_JS_NAME),
                                   "cls": FIGURE_HTML_CLASS})
