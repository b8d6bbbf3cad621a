"""The steering widget of notebook 06: pick features, drag sliders, watch the text change.

``SteeringWidget(model, tokenizer, sae, catalog).show()`` builds: a prompt box; a feature
picker searchable by index, top tokens and subdomain; one slider per chosen feature from
-k to +k times its largest observed activation (the maximum is shown next to it, with a
button that sets it); mode, keep-error, positions, temperature (0 = greedy), top-k, top-p,
seed and length controls; the baseline and steered continuations side by side with tokens
coloured by the first steered feature's activation; a bar chart of next-token probability
shifts. Generation uses the KV-cached :class:`~mono_utils.steering.FastLM`, and slider drags
are debounced, so a move redraws in well under half a second on 2 CPU cores.

Stable CSS classes for browser tests: ``mono-steer-slider`` (every feature slider; the main
one also ``mono-steer-slider-main``), ``mono-steer-output`` (the steered text),
``mono-steer-baseline``, ``mono-steer-plot`` (the bar chart), ``mono-steer-status``.
The steered output starts with ``<span class="mono-steer-state">`` holding the slider values
it was computed with, formatted like the slider readout (``.2f``).
"""
from __future__ import annotations

import asyncio
import html
import time

import numpy as np

from ..features.dashboards import readable_tokens, readable_vocab
from .catalog import DEMO_PROMPT, FeatureCatalog
from .interventions import MAX_STEER, MODES, FastLM, Intervention, generate, next_token_shift, one_thread


def next_token_figure(first_logits, tokenizer, k: int = 12, title: str = "next-token probabilities"):
    """A bar chart of the ``k`` most likely next tokens (plotly)."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    import torch  # lazy: torch is heavy
    p = torch.softmax(first_logits.float(), -1)
    top = p.topk(max(1, min(k, p.numel())))
    names = [repr(readable_tokens(tokenizer, [i])[0]) for i in top.indices.tolist()]   # a split byte as ‹d7›, not �
    fig = go.Figure(go.Bar(x=names, y=top.values.tolist()))
    fig.update_layout(title=title, xaxis_title="next token", yaxis_title="probability", height=300,
                      margin=dict(t=50, b=40))
    return fig


def render_tokens(toks: list[str], acts, n_prompt: int, vmax: float, title: str = "") -> str:
    """Tokens as HTML spans, background by activation (orange), the prompt in grey italics."""
    out = [f"<div style='font-weight:600;margin-bottom:4px'>{html.escape(title)}</div>"] if title else []
    out.append("<div style='font-family:monospace;white-space:pre-wrap;line-height:1.6'>")
    for k, t in enumerate(toks):
        a = float(acts[k - 1]) if acts is not None and 0 < k <= len(acts) else 0.0
        alpha = 0.0 if vmax <= 0 else min(1.0, max(0.0, a / vmax))
        style = f"background:rgba(255,140,0,{alpha:.2f});"
        if k < n_prompt:
            style += "color:#777;font-style:italic;"
        text = html.escape(t).replace("\n", "↵\n") if k else ""
        out.append(f"<span title='act {a:.2f}' style='{style}'>{text}</span>")
    out.append("</div>")
    return "".join(out)


class SteeringWidget:
    def __init__(self, model, tokenizer, sae, catalog: FeatureCatalog, prompt: str = DEMO_PROMPT,
                 features=(), k: float = 10.0, debounce_s: float = 0.08, n_shift: int = 8):
        import ipywidgets as W  # lazy: widgets only in a notebook
        self.W = W
        self.model, self.tokenizer, self.sae, self.catalog = model, tokenizer, sae, catalog
        self.fast = FastLM(model)
        self.fast.check()
        self.debounce_s, self.n_shift = debounce_s, n_shift
        self.n_ctx = int(model.cfg.n_ctx)
        self._handle = None
        self._base_cache: dict = {}
        self.n_renders, self.last_ms, self.last_error = 0, 0.0, None
        self.last = None
        lay = W.Layout(width="auto")
        self.prompt = W.Textarea(value=prompt, description="prompt", continuous_update=False,
                                 layout=W.Layout(width="98%", height="60px"))
        self.search = W.Text(placeholder="search features: index, token or domain (e.g. dna, 42)",
                             description="find", continuous_update=True, layout=W.Layout(width="60%"))
        self.picker = W.Select(options=[], rows=6, layout=W.Layout(width="98%"))
        self.add_btn = W.Button(description="steer this feature", icon="plus")
        self.mode = W.Dropdown(options=list(MODES), value="clamp", description="mode")
        self.keep_error = W.Checkbox(value=True, description="keep SAE error (x + Δdecode)", indent=False)
        self.where = W.Dropdown(options=["all positions", "generated only", "prompt only"],
                                value="all positions", description="where")
        self.range_k = W.FloatSlider(value=k, min=1.0, max=30.0, step=0.5, description="range ×max")
        self.temperature = W.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05,
                                         description="temperature", tooltip="0 = greedy")
        self.top_k = W.IntSlider(value=40, min=0, max=200, description="top-k (0 off)")
        self.top_p = W.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p")
        self.seed = W.BoundedIntText(value=0, min=0, max=2**31 - 1, description="seed")
        self.length = W.IntSlider(value=min(40, self.n_ctx - 2), min=1, max=self.n_ctx - 2,
                                  description="new tokens")
        self.slider_box = W.VBox([])
        self.sliders: dict[int, object] = {}
        self.baseline_html = W.HTML(layout=W.Layout(width="49%"))
        self.steered_html = W.HTML(layout=W.Layout(width="49%"))
        self.status = W.HTML()
        self.baseline_html.add_class("mono-steer-baseline")
        self.steered_html.add_class("mono-steer-output")
        self.status.add_class("mono-steer-status")
        self.fig = self._make_figure()
        self.fig.add_class("mono-steer-plot")
        self.search.observe(lambda _: self._filter(), "value")
        self.add_btn.on_click(lambda _: self.add_feature(self.picker.value))
        for w in (self.prompt, self.mode, self.keep_error, self.where, self.temperature, self.top_k,
                  self.top_p, self.seed, self.length):
            w.observe(self._changed, "value")
        self.range_k.observe(lambda _: self._rescale(), "value")
        self._filter()
        self.ui = W.VBox([
            self.prompt,
            W.HBox([self.search, self.add_btn]), self.picker, self.slider_box,
            W.HBox([self.mode, self.where, self.keep_error], layout=lay),
            W.HBox([self.temperature, self.top_k, self.top_p], layout=lay),
            W.HBox([self.seed, self.length, self.range_k], layout=lay),
            W.HBox([self.baseline_html, self.steered_html]), self.fig, self.status])
        for f in features:
            self.add_feature(f, refresh=False)
        self.refresh()

    # ------------------------------------------------------------ building blocks
    def _make_figure(self):
        import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
        # one trace per direction with a fixed colour: a per-bar colour array reached Voila's
        # renderer after the bars and left them black there
        fig = go.Figure([go.Bar(x=[], y=[], orientation="h", marker_color="#2a9d8f", name="more likely"),
                         go.Bar(x=[], y=[], orientation="h", marker_color="#e76f51", name="less likely")])
        fig.update_layout(height=330, margin=dict(l=140, r=20, t=40, b=30),
                          title="next-token probability: steered − baseline",
                          xaxis_title="Δ probability", yaxis=dict(autorange="reversed"))
        try:
            return go.FigureWidget(fig)
        except ImportError:   # anywidget missing: a re-rendered figure in an Output instead
            out = self.W.Output()
            out._fig = fig
            return out

    def _filter(self):
        ids = self.catalog.search(self.search.value, limit=200)
        self.picker.options = [(self.catalog.label(i), i) for i in ids]
        if ids:
            self.picker.value = ids[0]

    def _range(self, feature: int) -> tuple[float, float]:
        mx = float(self.catalog.max_act[feature])
        mx = mx if np.isfinite(mx) and mx > 0 else 1.0
        return mx, min(MAX_STEER, self.range_k.value * mx)    # sliders stay inside the documented range

    def add_feature(self, feature, value: float | None = None, refresh: bool = True):
        """Add a slider for ``feature`` (value defaults to its max activation)."""
        W = self.W
        if feature is None:
            return
        if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
            raise ValueError(f"feature must be an integer index, got {feature!r}")
        feature = int(feature)
        d = int(self.sae.cfg.d_sae)
        if not 0 <= feature < d:
            raise ValueError(f"feature index {feature} is out of range: this SAE has {d} features "
                             f"(0..{d - 1})")
        if feature in self.sliders:
            return
        mx, lim = self._range(feature)
        s = W.FloatSlider(value=mx if value is None else float(np.clip(value, -lim, lim)), min=-lim,
                          max=lim, step=lim / 200, description=f"#{feature}", continuous_update=True,
                          readout_format=".2f", layout=W.Layout(width="60%"))
        s.add_class("mono-steer-slider")
        s.add_class(f"mono-steer-slider-{feature}")
        if not self.sliders:
            s.add_class("mono-steer-slider-main")
        s.observe(self._changed, "value")
        pin = W.Button(description=f"= max {mx:.2f}", tooltip="set to the largest observed activation",
                       layout=W.Layout(width="auto"))
        pin.on_click(lambda _: setattr(s, "value", mx))
        rm = W.Button(description="remove", layout=W.Layout(width="auto"))
        info = W.HTML(f"<small>max obs. <b>{mx:.2f}</b> (slider ±{self.range_k.value:g}×) · "
                      f"{html.escape(self.catalog.label(feature))}</small>")
        row = W.HBox([s, pin, rm, info])
        rm.on_click(lambda _: self.remove_feature(feature))
        self.sliders[feature] = s
        self._rows = getattr(self, "_rows", {})
        self._rows[feature] = row
        self.slider_box.children = tuple(self._rows[f] for f in self.sliders)
        if refresh:
            self.refresh()

    def remove_feature(self, feature: int):
        if feature in self.sliders:
            self.sliders.pop(feature)
            self._rows.pop(feature)
            self.slider_box.children = tuple(self._rows[f] for f in self.sliders)
            self.refresh()

    def _rescale(self):
        for f, s in self.sliders.items():
            mx, lim = self._range(f)
            v = float(np.clip(s.value, -lim, lim))
            if lim > s.max:
                s.max, s.min = lim, -lim
            else:
                s.min, s.max = -lim, lim
            s.step, s.value = lim / 200, v
        self._changed()

    def set_value(self, feature: int, value: float):
        """Set a feature's slider from code and redraw now (no debounce)."""
        if feature not in self.sliders:
            self.add_feature(feature, value, refresh=False)
        v = float(value)
        if not np.isfinite(v):
            raise ValueError(f"value {value} for feature {feature} is not finite: use a finite number")
        s = self.sliders[feature]
        target = float(np.clip(v, s.min, s.max))
        if s.value == target:
            self.refresh()
            return
        old, self.debounce_s = self.debounce_s, 0
        try:
            s.value = target        # the observer redraws
        finally:
            self.debounce_s = old

    def pin(self, feature: int, multiple: float = 10.0, mode: str = "clamp"):
        """The paper's demo: steer only ``feature``, clamped at ``multiple`` x its max activation."""
        for f in [f for f in self.sliders if f != feature]:
            self.sliders.pop(f)
            self._rows.pop(f)
        self.slider_box.children = tuple(self._rows[f] for f in self.sliders)
        old, self.debounce_s = self.debounce_s, 0
        try:
            self.mode.value = mode
            if self.range_k.value < multiple:
                self.range_k.value = float(np.ceil(multiple))
        finally:
            self.debounce_s = old
        self.set_value(feature, multiple * self._range(feature)[0])
        return self

    def interventions(self, n_prompt: int | None = None) -> list[Intervention]:
        pos = None
        if self.where.value != "all positions" and n_prompt is not None:
            pos = tuple(range(n_prompt, self.n_ctx)) if self.where.value == "generated only" \
                else tuple(range(n_prompt))
        return [Intervention(f, self.mode.value, s.value, pos) for f, s in self.sliders.items()]

    # ------------------------------------------------------------ redraw
    def _changed(self, *_):
        if self.debounce_s and self.debounce_s > 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                if self._handle is not None:
                    self._handle.cancel()
                self._handle = loop.call_later(self.debounce_s, self.refresh)
                return
        self.refresh()

    def _settings(self) -> dict:
        return dict(max_new_tokens=int(self.length.value), temperature=float(self.temperature.value),
                    top_k=int(self.top_k.value) or None,
                    top_p=float(self.top_p.value) if self.top_p.value < 1 else None,
                    seed=int(self.seed.value))

    def refresh(self):
        """Regenerate baseline (cached) and steered text, redraw everything."""
        with one_thread(1):
            self._refresh()

    def _refresh(self):
        self._handle = None
        t0 = time.perf_counter()
        try:
            kw = self._settings()
            tracked = list(self.sliders)
            key = (self.prompt.value, tuple(sorted(kw.items())), tuple(tracked))
            base = self._base_cache.get(key)
            if base is None:
                base = generate(self.model, self.tokenizer, self.sae, self.prompt.value, (),
                                track=tracked, fast=self.fast, **kw)
                self._base_cache = {key: base}
            ivs = self.interventions(len(base.prompt_ids))
            steer = generate(self.model, self.tokenizer, self.sae, self.prompt.value, ivs,
                             keep_error=self.keep_error.value, track=tracked, fast=self.fast, **kw)
        except (ValueError, TypeError) as e:
            self.last_error = str(e)
            self.status.value = f"<span style='color:#b00'>⚠ {html.escape(str(e))}</span>"
            self.steered_html.value = "<span class='mono-steer-state'>(no output)</span>"
            return
        self.last_error = None
        self.last = (base, steer)
        shift = next_token_shift(base.first_logits, steer.first_logits, self.tokenizer, self.n_shift)
        self._draw(base, steer, shift, ivs)
        self.n_renders += 1
        self.last_ms = (time.perf_counter() - t0) * 1000
        notes = "; ".join(steer.notes)
        self.status.value = (f"<small>redraw {self.last_ms:.0f} ms · KL(steered‖baseline) of the next "
                             f"token {shift['kl']:.3f}{' · ' + html.escape(notes) if notes else ''}</small>")

    def _draw(self, base, steer, shift, ivs):
        n_prompt = len(base.prompt_ids)
        first = next(iter(self.sliders), None)
        vmax = float(self.catalog.max_act[first]) if first is not None else 1.0
        state = ", ".join(f"#{iv.feature} {iv.mode} {iv.value:.2f}" for iv in ivs) or "no intervention"
        col = lambda g: None if g.feature_acts is None else g.feature_acts[:, 0]  # noqa: E731
        # as the atlas shows text: a Hebrew or Arabic letter split across tokens shows whole, not as �
        shown = lambda g: readable_tokens(self.tokenizer, list(g.prompt_ids) + list(g.new_ids))  # noqa: E731
        self.baseline_html.value = render_tokens(shown(base), col(base), n_prompt, vmax,
                                                 "baseline (no intervention)")
        self.steered_html.value = (f"<span class='mono-steer-state' style='font-weight:600'>steered: "
                                   f"{html.escape(state)}</span>"
                                   + render_tokens(shown(steer), col(steer), n_prompt, vmax))
        vocab = readable_vocab(self.tokenizer)
        rows = [{**r, "token": vocab[r["id"]] if 0 <= r["id"] < len(vocab) else r["token"]}
                for r in shift["up"] + shift["down"][::-1]]
        parts = [[r for r in rows if r["delta"] >= 0], [r for r in rows if r["delta"] < 0]]
        updates = [dict(x=[r["delta"] for r in part], y=[f"{r['token']!r} " for r in part],
                        hovertext=[f"{r['p_base']:.3f} → {r['p_steered']:.3f}" for r in part]) for part in parts]
        if hasattr(self.fig, "batch_update"):
            with self.fig.batch_update():
                for bar, u in zip(self.fig.data, updates):
                    bar.update(**u)
                self.fig.layout.yaxis.categoryorder = "array"
                self.fig.layout.yaxis.categoryarray = [f"{r['token']!r} " for r in rows]
        else:
            fig = self.fig._fig
            for bar, u in zip(fig.data, updates):
                bar.update(**u)
            fig.update_yaxes(categoryorder="array", categoryarray=[f"{r['token']!r} " for r in rows])
            self.fig.clear_output(wait=True)
            with self.fig:
                fig.show()

    def show(self):
        from IPython.display import display  # lazy: display only in a notebook
        display(self.ui)
        return self
