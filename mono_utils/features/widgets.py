"""ipywidgets front ends: the feature browser and the blinded rating form.

The search functions they call are plain functions (``units_for_token``, ``units_for_domain``,
``active_units_in_text``) so they can be used, and tested, without a browser. Every widget
keeps its last output in a readable attribute (``browser.dashboard.value``, ``browser.status.value``,
``browser.results.children``) so tests drive them from code.
"""
from __future__ import annotations

import html

import numpy as np
import torch

from ..core.index import ActivationIndex, _check_kind
from ..core.model import mlp_post, model_config_of
from ..core.tokenizer import EOT, encode
from .dashboards import _threads, dashboard_data, readable_tokens, render_dashboard, show_token
from .rating import RUBRIC, rubric_total


# ---------------------------------------------------------------- search results that read as tables
class UnitRows(list):
    """A search's rows (a list of dicts, as before) that print and display as a table with rounded
    numbers, not a dump of dicts with 16-digit floats."""

    def frame(self):
        import pandas as pd  # lazy: only to show a table
        return pd.DataFrame(list(self))

    def __repr__(self) -> str:
        if not self:
            return "(no units)"
        return "\n" + self.frame().to_string(index=False, float_format=lambda x: f"{x:.3g}")

    __str__ = __repr__

    def _repr_html_(self) -> str:
        if not self:
            return "<i>(no units)</i>"
        return self.frame().to_html(index=False, float_format=lambda x: f"{x:.3g}", border=0)


class ActiveUnits(dict):
    """``active_units_in_text``'s result (a dict, as before) that displays as one row per token."""

    def frame(self):
        import pandas as pd  # lazy: only to show a table
        return pd.DataFrame({"token": [show_token(t) for t in self["tokens"]],
                             "most active units (unit: activation)": [
                                 ", ".join(f"{u}: {a:.2f}" for u, a in row) or "-" for row in self["units"]]})

    def __repr__(self) -> str:
        notes = "".join(f"\nnote: {n}" for n in self.get("notes", []))
        return self.frame().to_string(index=False) + notes

    __str__ = __repr__

    def _repr_html_(self) -> str:
        notes = "".join(f"<p><i>note: {html.escape(n)}</i></p>" for n in self.get("notes", []))
        return self.frame().to_html(index=False, border=0) + notes


# ---------------------------------------------------------------- searches (no widgets)
def make_renderer(index: ActivationIndex, model, tokenizer, sae=None, **kw):
    """``render(kind, unit, blind=False) -> html`` for widgets."""
    def render(kind: str, unit: int, blind: bool = False) -> str:
        return render_dashboard(dashboard_data(index, kind, unit, model, tokenizer, sae, **kw), blind=blind)
    return render


@torch.no_grad()
def _unit_acts_on(model, sae, tokens: np.ndarray, kind: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(tokens, np.int64))
    with _threads(1 if t.numel() <= 16384 else None):
        x = mlp_post(model, t)
    if kind == "neuron":
        return x.float()
    if sae is None:
        raise ValueError("searching features needs the SAE: pass sae=...")
    return sae.encode(x.reshape(-1, x.shape[-1]).float()).reshape(*x.shape[:2], -1)


def units_for_token(index: ActivationIndex, model, sae, tokenizer, token: str, kind: str = "feature",
                    k: int = 10, max_occurrences: int = 256, seed: int = 0) -> list[dict]:
    """Units that fire most, on average, on occurrences of ``token`` (e.g. " def") in the indexed text."""
    _check_kind(kind)
    if not token:
        raise ValueError("the token to search is empty: type a token such as ' def' (mind the leading space)")
    ids = encode(tokenizer, token)
    if len(ids) != 1:
        parts = ", ".join(repr(readable_tokens(tokenizer, [i])[0]) for i in ids) or "nothing"
        raise ValueError(f"{token!r} is {len(ids)} tokens ({parts}), not one: search for one of those tokens")
    t = ids[0]
    where = np.flatnonzero(index.tokens.reshape(-1) == t)
    if len(where) == 0:
        raise ValueError(f"token {readable_tokens(tokenizer, [t])[0]!r} never appears in the indexed text: "
                         f"try another token")
    rng = np.random.default_rng(seed)
    if len(where) > max_occurrences:
        where = np.sort(rng.choice(where, max_occurrences, replace=False))
    rows, pos = where // index.n_ctx, where % index.n_ctx
    urows, inv = np.unique(rows, return_inverse=True)
    acts = _unit_acts_on(model, sae, index.tokens[urows], kind)[torch.as_tensor(inv), torch.as_tensor(pos)]
    mean, frac = acts.mean(0).numpy(), (acts > 0).float().mean(0).numpy()
    top = np.argsort(-mean, kind="stable")[:k]
    return UnitRows({"unit": int(u), "mean_act": float(mean[u]), "fires": float(frac[u]),
                     "occurrences": int(len(where))} for u in top if mean[u] > 0)


def units_for_domain(index: ActivationIndex, kind: str, label: str, k: int = 10, min_count: int = 5) -> list[dict]:
    """Units whose firings fall most in a domain or subdomain (``"code"`` or ``"subdomain:hebrew"``)."""
    u = index._u(kind)
    level, name = ("subdomain", label.split(":", 1)[1]) if label.startswith("subdomain:") else ("domain", label)
    names = index.subdomain_names if level == "subdomain" else index.domain_names
    if name not in names:
        raise ValueError(f"unknown {level} {name!r}: choose one of {', '.join(names)}")
    j = names.index(name)
    counts = (u.subdomain_counts if level == "subdomain" else u.domain_counts)[:, j]
    share = counts / np.maximum(u.count, 1)
    ok = u.count >= min_count
    score = np.where(ok, share + 1e-9 * counts, -1)
    top = np.argsort(-score, kind="stable")[:k]
    return UnitRows({"unit": int(i), "share": float(share[i]), "count": int(counts[i]), "total": int(u.count[i])}
                    for i in top if score[i] > 0)


def active_units_in_text(model, sae, tokenizer, text: str, kind: str = "feature", k: int = 5,
                         index: ActivationIndex | None = None) -> dict:
    """Per token of ``text``: the ``k`` most active units. Returns ``{"tokens", "units", "notes"}``."""
    _check_kind(kind)
    if text is None or not str(text).strip():
        raise ValueError("the pasted text is empty: paste a sentence or some code to see which units fire on it")
    ids = encode(tokenizer, text)
    if not ids:
        raise ValueError(f"the tokenizer produced no tokens for {text[:40]!r}: its characters are unknown to it; "
                         f"paste text the corpus could contain")
    notes = []
    n_ctx = model_config_of(model).n_ctx
    if len(ids) > n_ctx - 1:
        notes.append(f"text is {len(ids)} tokens; only the first {n_ctx - 1} fit the context")
        ids = ids[: n_ctx - 1]
    shown = readable_tokens(tokenizer, ids)   # a split character shows whole, on the token with its first byte
    if any("\u2039" in readable_tokens(tokenizer, [i])[0] for i in ids):
        notes.append("some characters were split into raw bytes across tokens (each shown on the token that "
                     "holds its first byte): they are rare or unseen in the corpus")
    if index is not None:
        seen = np.isin(ids, np.unique(index.tokens))
        if not seen.all():
            notes.append(f"{int((~seen).sum())} token(s) never occur in the indexed text; the model has rarely "
                         f"or never seen them")
    bos = tokenizer.convert_tokens_to_ids(EOT)
    acts = _unit_acts_on(model, sae, np.array([[bos] + ids]), kind)[0, 1:]
    out = []
    for p in range(len(ids)):
        a = acts[p]
        top = torch.argsort(a, descending=True)[:k]
        out.append([(int(u), float(a[u])) for u in top if a[u] > 0])
    return ActiveUnits(tokens=shown, units=out, notes=notes)


# ---------------------------------------------------------------- the browser
class FeatureBrowser:
    """Browse features and neurons: index, prev/next/random, search by token, domain or pasted text."""

    def __init__(self, index: ActivationIndex, model, tokenizer, sae=None, kind: str = "feature", unit: int = 0,
                 seed: int = 0, dashboard_kw: dict | None = None):
        import ipywidgets as W  # lazy: widgets only in a notebook
        self.index, self.model, self.tokenizer, self.sae = index, model, tokenizer, sae
        self.rng = np.random.default_rng(seed)
        self.render = make_renderer(index, model, tokenizer, sae, **(dashboard_kw or {}))
        kinds = [k for k in ("feature", "neuron") if k in index.units]
        self.kind = W.ToggleButtons(options=kinds, value=kind if kind in kinds else kinds[0], description="unit kind")
        self.unit = W.BoundedIntText(value=0, min=0, max=index.n_units(self.kind.value) - 1, description="index")
        self.prev_btn, self.next_btn = W.Button(description="\u25c0 prev"), W.Button(description="next \u25b6")
        self.random_btn = W.Button(description="random live")
        self.status = W.HTML()
        self.dashboard = W.HTML()
        self.token_box = W.Text(placeholder="a token, e.g. ' def'", description="token")
        self.token_btn = W.Button(description="search token")
        self.domain_box = W.Dropdown(options=index.domain_names + [f"subdomain:{s}" for s in index.subdomain_names],
                                     description="domain")
        self.domain_btn = W.Button(description="search domain")
        self.text_box = W.Textarea(placeholder="paste text here", layout=W.Layout(width="100%", height="70px"))
        self.text_btn = W.Button(description="analyse text")
        self.results = W.VBox()
        self.prev_btn.on_click(lambda _: self.step(-1))
        self.next_btn.on_click(lambda _: self.step(+1))
        self.random_btn.on_click(lambda _: self.random())
        self.token_btn.on_click(lambda _: self.search_token(self.token_box.value))
        self.domain_btn.on_click(lambda _: self.search_domain(self.domain_box.value))
        self.text_btn.on_click(lambda _: self.analyse_text(self.text_box.value))
        self._muted = False
        self.kind.observe(self._on_kind, names="value")
        self.unit.observe(lambda ch: None if self._muted else self.show(self.kind.value, ch["new"]), names="value")
        self.widget = W.VBox([
            W.HBox([self.kind, self.unit, self.prev_btn, self.next_btn, self.random_btn]),
            W.HBox([self.token_box, self.token_btn, self.domain_box, self.domain_btn]),
            W.HBox([self.text_box, self.text_btn]), self.results, self.status, self.dashboard])
        self.current: tuple[str, int] | None = None
        self.show(self.kind.value, unit)

    def _ipython_display_(self):
        from IPython.display import display  # lazy: display only in a notebook
        display(self.widget)

    def _error(self, e: Exception) -> None:
        self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def _on_kind(self, change) -> None:
        if self._muted:
            return
        n = self.index.n_units(change["new"])
        self.show(change["new"], min(self.unit.value, n - 1))

    def show(self, kind: str, unit: int) -> None:
        """Open a unit's dashboard (errors go to ``status``)."""
        try:
            unit = self.index.check_unit(kind, unit)
            self.dashboard.value = self.render(kind, unit)
        except ValueError as e:
            self._error(e)
            return
        self.current = (kind, unit)
        flag = " \u2014 <b style='color:#b00'>dead</b>" if self.index.is_dead(kind, unit) else \
            " \u2014 <b style='color:#a60'>ultralow density</b>" if self.index.is_ultralow(kind, unit) else ""
        self.status.value = f"{kind} {unit} of {self.index.n_units(kind)}{flag}"
        self._muted = True
        try:
            if self.kind.value != kind:
                self.kind.value = kind
            self.unit.max = self.index.n_units(kind) - 1
            self.unit.value = unit
        finally:
            self._muted = False

    def step(self, delta: int) -> None:
        kind, unit = self.current or (self.kind.value, 0)
        self.show(kind, (unit + delta) % self.index.n_units(kind))

    def random(self) -> None:
        kind = self.kind.value
        live = self.index.live_units(kind)
        if len(live) == 0:
            self._error(ValueError(f"no live {kind}s in this index"))
            return
        self.show(kind, int(self.rng.choice(live)))

    def _buttons(self, title: str, kind: str, items: list[tuple[int, str]]) -> None:
        import ipywidgets as W  # lazy: widgets only in a notebook
        btns = []
        for u, label in items:
            b = W.Button(description=label, tooltip=f"open {kind} {u}", layout=W.Layout(width="auto"))
            b.on_click(lambda _, u=u: self.show(kind, u))
            btns.append(b)
        self.results.children = [W.HTML(title), W.HBox(btns, layout=W.Layout(flex_flow="row wrap"))]

    def search_token(self, token: str) -> list[dict]:
        kind = self.kind.value
        try:
            hits = units_for_token(self.index, self.model, self.sae, self.tokenizer, token, kind)
        except ValueError as e:
            self._error(e)
            return []
        self._buttons(f"<b>{kind}s firing most on {html.escape(show_token(token))}</b> (mean activation)", kind,
                      [(h["unit"], f"{kind[0]}{h['unit']}: {h['mean_act']:.2f}") for h in hits])
        return hits

    def search_domain(self, label: str) -> list[dict]:
        kind = self.kind.value
        try:
            hits = units_for_domain(self.index, kind, label)
        except ValueError as e:
            self._error(e)
            return []
        self._buttons(f"<b>{kind}s that fire mostly in {html.escape(label)}</b> (share of their firings)", kind,
                      [(h["unit"], f"{kind[0]}{h['unit']}: {h['share']:.0%}") for h in hits])
        return hits

    def analyse_text(self, text: str) -> dict | None:
        import ipywidgets as W  # lazy: widgets only in a notebook
        kind = self.kind.value
        try:
            res = active_units_in_text(self.model, self.sae, self.tokenizer, text, kind, index=self.index)
        except ValueError as e:
            self._error(e)
            self.results.children = []
            return None
        rows = []
        for tok, units in zip(res["tokens"], res["units"]):
            btns = []
            for u, a in units:
                b = W.Button(description=f"{kind[0]}{u} {a:.2f}", layout=W.Layout(width="auto"),
                             tooltip=f"open {kind} {u}" + (" (dead in index)" if self.index.is_dead(kind, u) else ""))
                b.on_click(lambda _, u=u: self.show(kind, u))
                btns.append(b)
            rows.append(W.HBox([W.HTML(f"<code>{html.escape(show_token(tok))}</code>",
                                       layout=W.Layout(width="110px"))] + btns))
        notes = "".join(f"<div style='color:#a60'>{html.escape(n)}</div>" for n in res["notes"])
        self.results.children = [W.HTML(f"<b>active {kind}s per token</b> (click to open){notes}")] + rows
        return res


# ---------------------------------------------------------------- the rating form
class RatingWidget:
    """The blinded rating form for a ``rating.RatingSession``; saves after every unit."""

    def __init__(self, session, render):
        import ipywidgets as W  # lazy: widgets only in a notebook
        self.session, self.render = session, render
        self.progress = W.HTML()
        self.dashboard = W.HTML()
        self.interpretation = W.Textarea(placeholder="your interpretation of this unit",
                                         layout=W.Layout(width="100%", height="50px"))
        self.scores = {name: W.IntSlider(value=0, min=0, max=mx, description=name.replace("_", " "),
                                         tooltip=q, style={"description_width": "170px"},
                                         layout=W.Layout(width="420px"))
                       for name, (mx, q) in RUBRIC.items()}
        self.help = W.HTML("<br>".join(f"<b>{n.replace('_', ' ')}</b> (0-{mx}): {html.escape(q)}" for n, (mx, q) in RUBRIC.items()))
        self.total = W.HTML()
        self.save_btn = W.Button(description="save & next", button_style="primary")
        self.status = W.HTML()
        for s in self.scores.values():
            s.observe(lambda _: self._update_total(), names="value")
        self.save_btn.on_click(lambda _: self.save())
        self.widget = W.VBox([self.progress, self.dashboard, self.help, self.interpretation,
                              *self.scores.values(), W.HBox([self.total, self.save_btn]), self.status])
        self._load()

    def _ipython_display_(self):
        from IPython.display import display  # lazy: display only in a notebook
        display(self.widget)

    def _update_total(self) -> int:
        v = {k: s.value for k, s in self.scores.items()}
        self.scores["effect_separation"].disabled = v["logit_consistency"] >= 3
        t = rubric_total(**v)
        self.total.value = f"<b>total {t} / 14</b>"
        return t

    def _load(self) -> None:
        cur = self.session.current()
        if cur is None:
            self.progress.value = f"<b>Session complete</b>: {self.session.progress()}. Thank you! " \
                                  f"Ratings are in {html.escape(str(self.session.path))}."
            self.dashboard.value = ""
            self.save_btn.disabled = True
            return
        i, kind, unit = cur
        self.progress.value = (f"<b>unit {i + 1} of {len(self.session.plan)}</b> ({self.session.progress()}; "
                               f"rater {html.escape(self.session.rater)}, seed {self.session.seed})")
        try:
            self.dashboard.value = self.render(kind, unit, blind=True)
        except ValueError as e:
            self.dashboard.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
        self.interpretation.value = ""
        for s in self.scores.values():
            s.value = 0
        self._update_total()

    def save(self) -> dict | None:
        v = {k: s.value for k, s in self.scores.items()}
        try:
            row = self.session.record(self.interpretation.value, **v)
        except (ValueError, OSError) as e:
            self.status.value = f"<span style='color:#b00'>not saved: {html.escape(str(e))}</span>"
            return None
        self.status.value = f"saved unit {row['item'] + 1} (total {row['total']})"
        self._load()
        return row
