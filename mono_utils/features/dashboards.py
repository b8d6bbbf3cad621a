"""One dashboard for any unit: an SAE feature or an MLP neuron, shown the same way.

``dashboard_data`` gathers the numbers (density, activation histogram, top contexts, samples
from 11 activation intervals, logit weights, ablation effects, domains) from the activation
index plus a few small forward passes; ``render_dashboard`` turns them into self-contained HTML
(inline styles only, no JavaScript, no network), so it renders offline anywhere.
"""
from __future__ import annotations

import contextlib
import html
import math
import time

import numpy as np
import torch

from ..core.index import ActivationIndex, _check_kind
from ..core.model import HOOK_MLP_POST, W_U, W_out, lm_loss
from ..core.tokenizer import readable_each, readable_tokens

_VOCAB_CACHE: dict = {}


# ---------------------------------------------------------------- token strings
def vocab_strings(tokenizer, d_vocab: int | None = None) -> list[str]:
    """Every token id as its text (cached per tokenizer)."""
    key = id(tokenizer)
    n = d_vocab or len(tokenizer)
    if key not in _VOCAB_CACHE or len(_VOCAB_CACHE[key]) < n:
        _VOCAB_CACHE[key] = [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in range(n)]
    return _VOCAB_CACHE[key]


def readable_vocab(tokenizer, d_vocab: int | None = None) -> list[str]:
    """Every token id alone as :func:`decode_run` shows it (cached per tokenizer): whole characters as
    text, a split byte as ``‹d7›``. For display only: cache keys and searches use ``vocab_strings``."""
    key = ("readable", id(tokenizer))
    n = d_vocab or len(tokenizer)
    if key not in _VOCAB_CACHE or len(_VOCAB_CACHE[key]) < n:
        _VOCAB_CACHE[key] = readable_each(tokenizer, range(n))
    return _VOCAB_CACHE[key]


def show_token(s: str) -> str:
    """A token made visible: spaces as ·, newlines as ↵, tabs as →."""
    return s.replace(" ", "\u00b7").replace("\n", "\u21b5").replace("\t", "\u2192") or "\u2205"


# ---------------------------------------------------------------- the unit's direction
def unit_direction(model, kind: str, unit: int, sae=None) -> torch.Tensor:
    """What the unit writes into the MLP output space: W_dec_raw[i] @ W_out (feature) or W_out[i] (neuron)."""
    _check_kind(kind)
    wo = W_out(model).detach().float()
    if kind == "neuron":
        if not 0 <= unit < wo.shape[0]:
            raise ValueError(f"unknown neuron {unit}: the MLP has {wo.shape[0]} neurons, numbered 0..{wo.shape[0] - 1}")
        return wo[unit]
    if sae is None:
        raise ValueError("a feature's dashboard needs its SAE: pass sae=... (mono_utils.pipeline.saes.get_sae)")
    d = sae.W_dec_raw.detach().float()
    if not 0 <= unit < d.shape[0]:
        raise ValueError(f"unknown feature {unit}: the SAE has {d.shape[0]} features, numbered 0..{d.shape[0] - 1}")
    return d[unit] @ wo


@torch.no_grad()
def logit_weights(model, kind: str, unit: int, sae=None) -> torch.Tensor:
    """[d_vocab] direct effect of the unit on the logits (its output direction through W_U)."""
    return unit_direction(model, kind, unit, sae) @ W_U(model).detach().float()


# ---------------------------------------------------------------- ablation
@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None and n < old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def ablation_hook(kind: str, unit: int, sae=None):
    """A hook for ``blocks.0.mlp.hook_post`` that removes the unit on every token."""
    _check_kind(kind)
    if kind == "neuron":
        def hook(act, hook=None):
            act = act.clone()
            act[..., unit] = 0
            return act
        return hook
    if sae is None:
        raise ValueError("ablating a feature needs its SAE: pass sae=...")
    d = sae.W_dec_raw.detach()[unit]

    def hook(act, hook=None):
        f = sae.encode(act)[..., unit:unit + 1].to(act.dtype)
        return act - f * d.to(act.dtype)
    return hook


@torch.no_grad()
def ablation_effects(model, tokens, kind: str, unit: int, sae=None) -> np.ndarray:
    """[rows, n_ctx] change in log-likelihood of each token when the unit is removed.

    Entry ``[r, p]`` = log P(token p | clean) - log P(token p | unit ablated): positive means
    the unit *helped* predict token ``p`` (the paper's blue underline), negative means it hurt.
    Position 0 (nothing predicts it) is 0.
    """
    t = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    b = t.shape[0]
    ablate = ablation_hook(kind, unit, sae)

    def second_half(act, hook=None):  # one forward pass: rows [0, b) clean, rows [b, 2b) ablated
        return torch.cat([act[:b], ablate(act[b:])])
    both = torch.cat([t, t])
    with _threads(1 if both.numel() <= 16384 else None):  # small batches: one thread is as fast, and steady
        lp = -lm_loss(model.run_with_hooks(both, fwd_hooks=[(HOOK_MLP_POST, second_half)]), both, reduce=False)
    clean, ablated = lp[:b], lp[b:]
    out = np.zeros(t.shape, np.float32)
    out[:, 1:] = (clean - ablated).numpy()
    return out


# ---------------------------------------------------------------- data
def _context(index: ActivationIndex, acts_row: np.ndarray, eff_row: np.ndarray | None, row: int, pos: int,
             tokenizer, before: int, after: int) -> dict:
    lo, hi = max(0, pos - before), min(index.n_ctx, pos + after + 1)
    ids = index.tokens[row, lo:hi].astype(int)
    return {"row": int(row), "pos": int(pos), "act": float(acts_row[pos]), "start": int(lo),
            "tokens": readable_tokens(tokenizer, ids),   # a letter split across tokens shows whole
            "acts": [float(a) for a in acts_row[lo:hi]],
            "effects": None if eff_row is None else [float(e) for e in eff_row[lo:hi]]}


def dashboard_data(index: ActivationIndex, kind: str, unit: int, model, tokenizer, sae=None, k_top: int = 10,
                   n_intervals: int = 11, per_interval: int = 2, seed: int = 0, before: int = 12, after: int = 4,
                   ablation: bool = True, n_logits: int = 10, interval_mode: str = "quantile",
                   rel_effect: float = 0.2, min_effect: float = 0.01, logit_w: np.ndarray | None = None) -> dict:
    """Everything a dashboard shows, as plain numbers and strings (see module doc).

    Ablation effects are underlined where ``|effect| >= max(min_effect, rel_effect * largest |effect|)``
    among the shown contexts (nats), so the marks pick out where the unit matters most.

    ``logit_w`` [d_vocab]: the unit's logit weights when they do not come from an SAE of the MLP's
    activations (a transcoder's feature writes to the residual stream: ``transcoder_logit_weights``);
    with it, ``sae`` may be None and ``ablation`` must be False (removing such a unit needs its own hook).
    """
    t0 = time.time()
    unit = index.check_unit(kind, unit)
    if logit_w is not None and ablation and sae is None:
        raise ValueError("a dashboard from given logit weights has no SAE to ablate the unit with: pass ablation=False")
    if kind == "feature" and sae is None and logit_w is None:
        raise ValueError("a feature's dashboard needs its SAE: pass sae=... (or its logit weights, logit_w=...)")
    vocab = readable_vocab(tokenizer)
    dens = float(index.density(kind)[unit])
    vals = index.nonzero_acts(kind, unit)
    data = {"kind": kind, "unit": unit, "n_units": index.n_units(kind), "density": dens,
            "count": int(len(vals)), "n_tokens": index.n_tokens, "max_act": float(index.max_act(kind)[unit]),
            "dead": index.is_dead(kind, unit), "ultralow": index.is_ultralow(kind, unit)}
    counts, edges = np.histogram(vals, bins=30) if len(vals) else (np.zeros(0), np.zeros(0))
    data["act_hist"] = {"counts": counts.tolist(), "edges": edges.tolist()}
    # logit weights
    lw = np.asarray(logit_w, dtype=np.float32) if logit_w is not None else logit_weights(model, kind, unit, sae).numpy()
    order = np.argsort(lw)
    data["logits_top"] = [(vocab[i] if i < len(vocab) else str(i), float(lw[i])) for i in order[::-1][:n_logits]]
    data["logits_bottom"] = [(vocab[i] if i < len(vocab) else str(i), float(lw[i])) for i in order[:n_logits]]
    lc, le = np.histogram(lw, bins=40)
    data["logit_hist"] = {"counts": lc.tolist(), "edges": le.tolist()}
    # examples
    top = index.top_examples(kind, unit, k_top)
    intervals = index.interval_samples(kind, unit, n_intervals, per_interval, seed, mode=interval_mode)
    rows = sorted({r for r, _, _ in top} | {r for it in intervals for r, _, _ in it["examples"]})
    acts = {}
    effects = {}
    if rows:
        row_ids = np.array(rows)
        dense = _rows_acts(index, kind, unit, row_ids)
        acts = dict(zip(rows, dense))
        if ablation:
            eff = ablation_effects(model, index.tokens[row_ids], kind, unit, sae)
            effects = dict(zip(rows, eff))
    shown = [np.abs(e) for e in effects.values()]
    data["effect_threshold"] = max(min_effect, rel_effect * float(max(a.max() for a in shown))) if shown else 0.0
    ctx = lambda r, p: _context(index, acts[r], effects.get(r), r, p, tokenizer, before, after)  # noqa: E731
    data["top"] = [ctx(r, p) for r, p, _ in top]
    data["intervals"] = [{"lo": it["lo"], "hi": it["hi"], "n": it["n"], "examples": [ctx(r, p) for r, p, _ in it["examples"]]}
                         for it in intervals]
    # domains
    base = index.label_base_rate("domain")
    dc = index.domain_counts(kind, unit, "domain")
    tot = max(1, sum(dc.values()))
    data["domains"] = [{"name": n, "count": c, "share": c / tot, "base": base[n],
                        "lift": (c / tot) / base[n] if base[n] > 0 else 0.0} for n, c in dc.items()]
    sc = index.domain_counts(kind, unit, "subdomain")
    sbase = index.label_base_rate("subdomain")
    data["subdomains"] = sorted([{"name": n, "count": c, "share": c / tot, "base": sbase[n]} for n, c in sc.items() if c],
                                key=lambda d: -d["count"])[:8]
    data["seconds"] = time.time() - t0
    return data


def _rows_acts(index: ActivationIndex, kind: str, unit: int, rows: np.ndarray) -> np.ndarray:
    """[len(rows), n_ctx] activations of the unit on some rows (from the sparse store)."""
    pos, val = index.unit_entries(kind, unit)
    r = pos // index.n_ctx
    out = np.zeros((len(rows), index.n_ctx), np.float32)
    where = np.searchsorted(rows, r)
    ok = (where < len(rows)) & (rows[np.minimum(where, len(rows) - 1)] == r)
    out[where[ok], pos[ok] % index.n_ctx] = val[ok]
    return out


# ---------------------------------------------------------------- HTML
_BOX = "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;line-height:1.9"


def _bars(counts, edges, color, height=60, log=False) -> str:
    counts = list(counts)
    if not counts:
        return "<div style='color:#888'>(no data)</div>"
    vals = [math.log10(c + 1) if log else c for c in counts]
    top = max(vals) or 1
    w = max(2, int(300 / len(counts)))
    bars = "".join(f"<div title='{edges[i]:.3g}..{edges[i + 1]:.3g}: {counts[i]}' style='display:inline-block;"
                   f"width:{w}px;height:{max(1 if counts[i] else 0, int(height * v / top))}px;background:{color};"
                   f"margin-right:1px;vertical-align:bottom'></div>" for i, v in enumerate(vals))
    return (f"<div style='height:{height}px;white-space:nowrap;display:flex;align-items:flex-end'>{bars}</div>"
            f"<div style='font-size:10px;color:#666'>{edges[0]:.3g} &hellip; {edges[-1]:.3g}"
            f"{' (log count)' if log else ''}</div>")


def _tokens_html(ctx: dict, max_act: float, eff_thr: float = 0.0) -> str:
    out = []
    for j, (s, a) in enumerate(zip(ctx["tokens"], ctx["acts"])):
        alpha = 0.0 if max_act <= 0 else min(1.0, max(0.0, a / max_act))
        style = f"background:rgba(255,100,0,{alpha:.2f});padding:0 1px;border-radius:2px"
        tip = f"act {a:.3f}"
        if ctx["effects"] is not None:
            e = ctx["effects"][j]
            if abs(e) >= eff_thr and abs(e) > 1e-4:
                col = "#1f6fd1" if e > 0 else "#d62728"
                style += f";border-bottom:{min(4, 1 + int(abs(e) * 4))}px solid {col}"
            tip += f" | ablation {'helped' if e > 0 else 'hurt'} {e:+.3f} nats"
        if ctx["start"] + j == ctx["pos"]:
            style += ";outline:1px solid #333"
        out.append(f"<bdi title='{html.escape(tip)}' style='{style}'>{html.escape(show_token(s))}</bdi>")
    return "".join(out)


def render_dashboard(data: dict, blind: bool = False, label: str | None = None) -> str:
    """Self-contained HTML (no JS, no network) for ``dashboard_data(...)`` output.

    ``blind=True`` hides whether the unit is a feature or a neuron (for rating).
    """
    name = label or ("unit" if blind else f"{data['kind']} {data['unit']}")
    flags = []
    if data["dead"]:
        flags.append("<b style='color:#b00'>DEAD: never fired on the indexed tokens</b>")
    elif data["ultralow"]:
        flags.append("<b style='color:#a60'>ULTRALOW density (the paper excludes these)</b>")
    dens = data["density"]
    head = (f"<div style='font-size:15px;font-weight:bold'>{html.escape(name)}</div>"
            f"<div>density {dens:.3g} (log10 {math.log10(dens) if dens > 0 else float('-inf'):.2f}), "
            f"fires on {data['count']:,} of {data['n_tokens']:,} tokens, max activation {data['max_act']:.3g}"
            f" {' '.join(flags)}</div>")
    mx = data["max_act"]
    thr = data.get("effect_threshold", 0.0)
    lg = lambda lst, col: "".join(f"<div><bdi style='background:{col};padding:0 3px'>{html.escape(show_token(s))}</bdi> "  # noqa: E731
                                  f"<span style='color:#555'>{v:+.3f}</span></div>" for s, v in lst)
    left = (f"<div style='font-weight:bold'>Activations (non-zero)</div>"
            f"{_bars(data['act_hist']['counts'], data['act_hist']['edges'], '#ff6400', log=True)}"
            f"<div style='font-weight:bold;margin-top:8px'>Logit weights</div>"
            f"{_bars(data['logit_hist']['counts'], data['logit_hist']['edges'], '#888')}"
            f"<div style='display:flex;gap:16px;margin-top:4px'><div><i>positive</i>{lg(data['logits_top'], '#d8ecff')}</div>"
            f"<div><i>negative</i>{lg(data['logits_bottom'], '#ffe0e0')}</div></div>"
            f"<div style='font-weight:bold;margin-top:8px'>Where it fires (share of firings vs. corpus share)</div>"
            + "".join(f"<div>{html.escape(d['name'])}: <span style='display:inline-block;width:{int(120 * d['share'])}px;"
                      f"height:8px;background:#ff6400'></span> {d['share']:.0%} <span style='color:#888'>(corpus {d['base']:.0%})</span></div>"
                      for d in data["domains"])
            + ("<div style='color:#555'>top subdomains: " + ", ".join(f"{html.escape(d['name'])} {d['share']:.0%}"
                                                                     for d in data["subdomains"]) + "</div>"
               if data["subdomains"] else ""))
    legend = ("<div style='color:#666;font-size:11px'>orange = activation; underline (|effect| &ge; "
              f"{thr:.3f} nats) = ablating the unit "
              "<span style='color:#1f6fd1'>lowers (it helped)</span> / <span style='color:#d62728'>raises "
              "(it hurt)</span> the log-likelihood of that token; outlined = the example's token. Hover for numbers.</div>")
    ex = [f"<div style='font-weight:bold'>Top activations</div>{legend}"]
    ex += [f"<div>{c['act']:.2f} &nbsp;{_tokens_html(c, mx, thr)}</div>" for c in data["top"]] or ["<div>(none)</div>"]
    for i, it in enumerate(data["intervals"]):
        if not it["examples"]:
            continue
        ex.append(f"<div style='font-weight:bold;margin-top:6px'>Interval {len(data['intervals']) - 1 - i}: "
                  f"{it['lo']:.2f}&ndash;{it['hi']:.2f} <span style='color:#888;font-weight:normal'>({it['n']:,} tokens)</span></div>")
        ex += [f"<div>{c['act']:.2f} &nbsp;{_tokens_html(c, mx, thr)}</div>" for c in it["examples"]]
    return (f"<div style='{_BOX};border:1px solid #ccc;padding:8px;border-radius:6px'>{head}"
            f"<div style='display:flex;gap:18px;align-items:flex-start;margin-top:6px'>"
            f"<div style='flex:0 0 330px'>{left}</div><div style='flex:1;min-width:0;overflow-x:auto'>{''.join(ex)}</div>"
            f"</div></div>")


class Dashboard:
    """Displays in Jupyter (``_repr_html_``); ``.data`` holds the numbers."""

    def __init__(self, data: dict, blind: bool = False):
        self.data, self.blind = data, blind

    def _repr_html_(self) -> str:
        return render_dashboard(self.data, self.blind)

    @property
    def html(self) -> str:
        return self._repr_html_()


def dashboard(index, kind, unit, model, tokenizer, sae=None, blind=False, **kw) -> Dashboard:
    return Dashboard(dashboard_data(index, kind, unit, model, tokenizer, sae, **kw), blind)


def side_by_side(*dashboards: Dashboard) -> str:
    """HTML of dashboards next to each other (wraps on narrow screens)."""
    cells = "".join(f"<div style='flex:1 1 520px;min-width:0'>{d.html}</div>" for d in dashboards)
    return f"<div style='display:flex;flex-wrap:wrap;gap:10px'>{cells}</div>"


# ---------------------------------------------------------------- picking examples
def domain_entropy(index: ActivationIndex, kind: str, level: str = "subdomain") -> np.ndarray:
    """Per unit, the entropy (bits) of where its firings fall, each label reweighted by 1/base rate."""
    u = index._u(kind)
    c = (u.subdomain_counts if level == "subdomain" else u.domain_counts).astype(np.float64)
    base = np.array(list(index.label_base_rate(level).values()))
    w = np.where(base > 0, c / np.maximum(base, 1e-12), 0)
    p = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return -(p * np.log2(np.where(p > 0, p, 1))).sum(1)


def pick_examples(index: ActivationIndex, min_count: int = 20) -> dict:
    """A polysemantic neuron (firings spread over many subdomains) and a monosemantic feature (one subdomain)."""
    out = {}
    for kind, pick in (("neuron", np.argmax), ("feature", np.argmin)):
        if kind not in index.units:
            continue
        ok = index._u(kind).count >= min_count
        if not ok.any():
            ok = index._u(kind).count > 0
        ent = domain_entropy(index, kind)
        ent = np.where(ok, ent, np.nan if pick is np.argmax else np.inf)
        out[kind] = int(np.nanargmax(ent) if pick is np.argmax else np.argmin(ent))
    return out
