"""A nested (Matryoshka) dictionary beside the separately trained family: notebook 05's last section.

As a family of separately trained SAEs grows, a feature splits: the small SAE's base64 feature becomes
several in the larger one. Splitting can leave no single owner: a broad feature of the wide SAE may
stay silent on the tokens that one of its finer neighbours now covers (*absorption*, measured with
``core.probing.absorption``), so that "base64" is spread over features that each fire on a part of it.

A Matryoshka SAE (Nabeshima 2024; Bussmann et al. 2025) is one dictionary trained so that its first
m features reconstruct on their own, for each m of a few nested prefixes: the loss is the mean over
the prefixes of the MSE of the first m features' reconstruction plus the decoder bias
(``core.sae.SAEConfig.matryoshka_prefixes``). The mean, not the sum, as Bussmann et al.'s reference
code does: the loss stays on the scale of one reconstruction MSE, so the AuxK weight (1/32) and the
learning rate weigh what they weigh for a plain BatchTopK SAE. (Their code also averages in the
reconstruction by the decoder bias alone, a term that trains only that bias; it is left out here.)
A feature that already serves the smallest prefix cannot hand its tokens to a later feature without
raising that prefix's loss, so it should keep firing on them while later features add detail.

- ``get_matryoshka_sae``: one BatchTopK SAE of the family's largest width whose prefixes are the
  family's sizes (``default``: 512 / 2,048 / 4,096 / 8,192), trained on as many activations as the
  family's member of that width (``matryoshka_tokens``), so the two compare.
- ``get_matryoshka_analysis``: for each width, the nested SAE's prefix beside the family's SAE of that
  width: reconstruction (FVU, L0, loss recovered, dead), for each corpus subdomain its owner (the
  feature with the best F1 at "fires" for the subdomain's tokens: the main feature of the probing
  table and the steering catalog), the owner's recall, precision and absorption rate, whether the
  owner is the smallest width's owner (nested: the same feature; family: a descendant of it along the
  splitting links), and the links between widths (``link_activations``). Cached in the artifact store.
  Each row's first position (BOS) is left out, as the SAEs' metrics leave it out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..core.metrics import evaluate_sae
from ..core.model import mlp_post, model_folder
from ..core.probing import absorption
from ..pipeline.models import get_model, get_tokens
from ..pipeline.presets import Preset, resolve
from ..pipeline.saes import (family_tokens, feature_density, get_sae, get_sae_family, sae_metrics, side_eval_preset,
                              ultralow_mask)
from ..store.results import cached_result, input_id
from ..universality.cache import token_rows
from ..universality.compare import _csr
from .family import ENCODE_MAX_CELLS, PAPER_THRESHOLD, _check_family, get_family_analysis, link_activations

NESTED, FAMILY = "nested", "family"   # the two dictionaries of every table: one Matryoshka SAE, separate SAEs
MIN_COS = 0.5        # a feature carries a domain's direction at this decoder cosine (core.probing's default)
MIN_TOKENS = 32      # subdomains with fewer tokens on the analysed rows are left out
SPECIFIC = 0.5       # an owner is specific when at least half of its firings are on its domain (the probing table's bar)
# the tables' columns, in order (the stored JSON keeps no order)
COLUMNS = {"quality": ["dictionary", "width", "train tokens", "L0", "FVU", "loss recovered", "dead"],
           "owners": ["domain", "tokens", "dictionary", "width", "owner", "f1", "recall", "precision", "specific",
                      "absorption", "absorbers", "keeps first owner"],
           "links": ["dictionary", "step", "live new features", "linked_frac", "parents_that_split", "max_children"]}


def matryoshka_tokens(p: Preset) -> int:
    """Activations the nested SAE trains on: those of the family's member of the same (largest) width."""
    n = max(p.sae_sizes)
    return p.sae_tokens if (n == p.sae_main or p.side_runs_full) else family_tokens(p, n)


def matryoshka_eval_preset(p: Preset) -> Preset:
    """The evaluation the nested SAE and each of its prefixes get: that of the family's member of its
    width, a side run's (``side_eval_preset``) unless that member is the main SAE (smoke) or side runs
    are full (paper)."""
    return p if max(p.sae_sizes) == p.sae_main else side_eval_preset(p)


def get_matryoshka_sae(preset=None, store=None, which: str = "A", *, progress: bool = True, live=None):
    """The nested BatchTopK SAE of model ``which``: ``max(preset.sae_sizes)`` features with the
    family's sizes as prefixes, k ``preset.topk_k``, on ``matryoshka_tokens(preset)`` activations.
    Built once, then loaded (artifact ``sae<which>-<width>-batchtopk-matryoshka-<preset>``).
    On ``paper``, whose family is the paper's ReLU recipe, it is still BatchTopK (the only recipe
    with nested prefixes here), so its comparison with the family there crosses recipes."""
    p, s = resolve(preset, store)
    sizes = tuple(_check_family(sorted(p.sae_sizes)))
    get_model(p, s, which=which, progress=progress)   # built (if at all) with the preset's own evaluation
    return get_sae(matryoshka_eval_preset(p), s, which=which, d_sae=sizes[-1], recipe="batchtopk",
                   matryoshka_prefixes=sizes,
                   total_tokens=matryoshka_tokens(p), progress=progress, live=live)


@dataclass
class MatryoshkaAnalysis:
    """The nested SAE's prefixes beside the family, width by width (``get_matryoshka_analysis``)."""
    sizes: list[int]
    quality: pd.DataFrame      # one row per (dictionary, width): tokens, L0, FVU, loss recovered, dead
    owners: pd.DataFrame       # one row per (domain, dictionary, width): the owner and how it covers the domain
    links: pd.DataFrame        # one row per (dictionary, step between widths): the splitting links
    params: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Per dictionary and width, over the domains: how many owners are specific (precision >= 0.5),
        mean owner recall, precision and absorption (over every domain, specific or not), and how many
        domains keep the smallest width's owner."""
        g = self.owners.groupby(["dictionary", "width"])
        out = pd.DataFrame({"domains": g.size(), "specific owners": g["specific"].sum().astype(int),
                            "owner recall": g["recall"].mean(),
                            "owner precision": g["precision"].mean(), "absorption": g["absorption"].mean(),
                            "keeps first owner": g["keeps first owner"].sum().astype(int)})
        return out.round(3)


@torch.no_grad()
def encode_rows(model, saes: dict, tokens: np.ndarray, labels: np.ndarray, n_labels: int, batch_rows: int = 64,
                progress: bool = True):
    """Every SAE of ``saes`` ({key: SAE}) on the token rows (one model forward per batch of rows), each
    row's first position (BOS) left out: ``({key: CSR [tokens, d_sae]}, label sums [n_labels, d_mlp],
    label counts [n_labels], total [d_mlp])``, the sums of the MLP activations over each label's tokens
    (for ``domain_directions``); the tokens are the rows' positions 1.. in order."""
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    if labels.shape != tokens.shape:
        raise ValueError(f"labels have shape {labels.shape} but the tokens {tokens.shape}: pass one label per token")
    out = {key: [] for key in saes}
    sums, counts, total = None, np.zeros(n_labels, np.int64), None
    for r in tqdm(range(0, len(tokens), batch_rows), desc="nested and family activations", disable=not progress):
        x = mlp_post(model, torch.from_numpy(tokens[r:r + batch_rows].astype(np.int64)))[:, 1:]
        x = x.reshape(-1, x.shape[-1]).float()
        ids = torch.from_numpy(labels[r:r + batch_rows, 1:].reshape(-1).astype(np.int64))
        if sums is None:
            sums, total = torch.zeros(n_labels, x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
        sums.index_add_(0, ids, x.double())
        total += x.double().sum(0)
        counts += np.bincount(ids.numpy(), minlength=n_labels)
        for key, sae in saes.items():
            step = max(1, min(len(x), ENCODE_MAX_CELLS // int(sae.cfg.d_sae)))
            out[key] += [_csr(sae.encode(x[i:i + step]), np.float32) for i in range(0, len(x), step)]
    return {k: sp.vstack(v).tocsr() for k, v in out.items()}, sums.numpy(), counts, total.numpy()


def domain_directions(sums: np.ndarray, counts: np.ndarray, total: np.ndarray) -> np.ndarray:
    """[n_labels, d] unit vectors from the mean MLP activation elsewhere to the mean on each label's
    tokens: ``core.probing.domain_direction`` of every label at once, from sums (NaN rows for a label
    with no tokens, or only tokens)."""
    n = counts.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        d = sums / counts[:, None] - (total[None] - sums) / (n - counts)[:, None]
        return d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)


def label_f1(acts: sp.csr_matrix, label_ids: np.ndarray, n_labels: int) -> np.ndarray:
    """[features, n_labels]: F1 of "the feature fires" (> 0) as a detector of each label's tokens."""
    fires = acts.copy()
    fires.data = (fires.data > 0).astype(np.float64)
    ids = np.asarray(label_ids).reshape(-1)
    if len(ids) != acts.shape[0]:
        raise ValueError(f"{len(ids)} labels for {acts.shape[0]} tokens: pass one label per token")
    onehot = sp.csr_matrix((np.ones(len(ids)), (np.arange(len(ids)), ids)), shape=(len(ids), n_labels))
    tp = np.asarray((fires.T @ onehot).todense())                     # [features, n_labels]
    fired = np.asarray(fires.sum(0)).ravel()[:, None]
    n = np.bincount(ids, minlength=n_labels)[None, :]
    return 2 * tp / np.maximum(fired + n, 1)


def domain_owner(acts: sp.csc_matrix, f1: np.ndarray, label: np.ndarray, decoder: np.ndarray,
                 direction: np.ndarray, min_cos: float = MIN_COS) -> dict:
    """The owner of one domain in one dictionary and how it covers the domain.

    ``acts`` [tokens, features] (CSC), ``f1`` [features]: each feature's F1 for the domain's tokens
    (``label_f1``), ``label`` [tokens] bool, ``decoder`` [features, d], ``direction`` [d]. The owner is
    the feature of best F1; its absorption is ``core.probing.absorption`` on the domain's tokens, computed
    on the owner and the features whose decoder carries the direction (the only ones it reads)."""
    owner = int(np.argmax(f1))
    fires = np.zeros(acts.shape[0], bool)
    col = acts[:, owner]
    fires[col.indices[col.data > 0]] = True
    dec = decoder / (np.linalg.norm(decoder, axis=1, keepdims=True) + 1e-12)
    cols = np.union1d([owner], np.flatnonzero(dec @ direction >= min_cos))
    on_domain = acts[:, cols].tocsr()[np.flatnonzero(label)].toarray()   # [domain tokens, owner + carriers]
    res = absorption(on_domain, np.ones(len(on_domain), bool), main=int(np.searchsorted(cols, owner)),
                     decoder=decoder[cols], direction=direction, min_cos=min_cos)
    precision = float((fires & label).sum() / max(1, fires.sum()))
    return {"owner": owner, "f1": float(f1[owner]), "recall": res.main_recall, "precision": precision,
            "specific": precision >= SPECIFIC, "absorption": res.rate, "absorbers": len(res.absorbers)}


def _nested_links(acts: sp.csr_matrix, sizes: list[int], ultralow, threshold: float) -> list[dict]:
    """For each step a -> b of the prefixes: the features a+1..b added at b linked to the first a
    features (the family's links, with the features shared by both prefixes left out)."""
    rows = []
    for a, b in zip(sizes, sizes[1:]):
        old = np.zeros(b, bool)
        old[:a] = True
        excl = {a: ultralow[:a], b: old | ultralow[:b]} if ultralow is not None else {b: old}
        g = link_activations({a: acts[:, :a], b: acts[:, :b]}, threshold=threshold, exclude=excl)
        rows.append({"dictionary": NESTED, "step": f"{a}->{b}", "live new features": int(g.live[1].sum()),
                     **g.summary()[f"{a}->{b}"]})
    return rows


def _clean(rows: list[dict]) -> list[dict]:
    """JSON-ready records (NaN -> None, numpy scalars -> Python)."""
    def one(v):
        if isinstance(v, (np.integer, np.bool_)):
            return v.item()
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        return v
    return [{k: one(v) for k, v in r.items()} for r in rows]


def matryoshka_analysis(model, nested, family: dict, tokens: np.ndarray, labels: np.ndarray, label_names: list[str],
                        family_graph, val_tokens: np.ndarray, eval_tokens: int, *, store=None,
                        threshold: float = PAPER_THRESHOLD, min_cos: float = MIN_COS, min_tokens: int = MIN_TOKENS,
                        progress: bool = True) -> dict:
    """The comparison itself (``get_matryoshka_analysis`` caches it): ``{"quality", "owners", "links"}`` as records.

    ``nested``: the Matryoshka SAE, its prefixes the family's sizes; ``family``: {size: SAE};
    ``tokens``, ``labels`` [rows, n_ctx]: the analysed rows and a label id per token; ``family_graph``:
    the family's ``SplitGraph`` on those rows; ``val_tokens``, ``eval_tokens``: the rows and budget
    the SAEs' own metrics were measured on (each prefix's loss recovered is measured there too).
    """
    sizes = _check_family(sorted(family))
    prefixes = list(nested.cfg.matryoshka_prefixes)
    if prefixes != sizes:
        raise ValueError(f"the nested SAE's prefixes {prefixes} are not the family's sizes {sizes}: train it with "
                         f"matryoshka_prefixes = the family's sizes (get_matryoshka_sae)")
    if list(family_graph.sizes) != sizes:
        raise ValueError(f"the splitting graph covers sizes {family_graph.sizes}, the family {sizes}: pass this "
                         f"family's graph (get_family_analysis(family=...).graph)")
    n_labels = len(label_names)
    acts, sums, counts, total = encode_rows(model, {NESTED: nested, **family}, tokens, labels, n_labels,
                                            progress=progress)
    flat = np.asarray(labels)[:, 1:].reshape(-1)   # as encode_rows: without each row's BOS
    directions = domain_directions(sums, counts, total)
    f1 = {k: label_f1(a, flat, n_labels) for k, a in acts.items()}
    csc = {k: a.tocsc() for k, a in acts.items()}
    dec = {k: (nested if k == NESTED else family[k]).W_dec_raw.detach().cpu().double().numpy() for k in acts}
    # each width's features: the nested SAE's first n, the family's SAE of width n
    cut = {n: {NESTED: (csc[NESTED][:, :n], f1[NESTED][:n], dec[NESTED][:n]), FAMILY: (csc[n], f1[n], dec[n])}
           for n in sizes}
    owners = []
    for lab in tqdm([i for i in range(n_labels) if min_tokens <= counts[i] < len(flat)], desc="domain owners",
                    disable=not progress):
        is_lab = flat == lab
        first = {}
        for lv, n in enumerate(sizes):
            for kind in (NESTED, FAMILY):
                a, c, d = cut[n][kind]
                r = domain_owner(a, c[:, lab], is_lab, d, directions[lab], min_cos)
                first.setdefault(kind, r["owner"])
                keeps = (r["owner"] == first[kind] if kind == NESTED
                         else family_graph.root(lv, r["owner"]) == (0, first[kind]))
                owners.append({"domain": label_names[lab], "tokens": int(counts[lab]), "dictionary": kind, "width": n,
                               **r, "keeps first owner": bool(keeps)})
    ultralow = ultralow_mask(nested)
    links = _nested_links(acts[NESTED], sizes, ultralow, threshold)
    summ = family_graph.summary()
    links += [{"dictionary": FAMILY, "step": f"{a}->{b}", "live new features": int(family_graph.live[lv + 1].sum()),
               **summ[f"{a}->{b}"]} for lv, (a, b) in enumerate(zip(sizes, sizes[1:]))]
    quality = []
    dens = feature_density(nested).numpy()
    nm = sae_metrics(nested)
    for n in sizes:
        m = sae_metrics(family[n])
        quality.append({"dictionary": FAMILY, "width": n, "train tokens": int(m["train_tokens"]), "L0": m["l0"],
                        "FVU": m["fvu"], "loss recovered": m["loss_recovered"], "dead": int(m["dead"])})
        pm = nm if n == nested.cfg.d_sae else evaluate_sae(nested.prefix(n), model, val_tokens, eval_tokens,
                                                           store=store, progress=progress)
        # dead from the nested SAE's own densities (on the density tokens, as the family's): a prefix's
        # features fire as they do in the whole SAE
        quality.append({"dictionary": NESTED, "width": n, "train tokens": int(nm["train_tokens"]), "L0": pm["l0"],
                        "FVU": pm["fvu"], "loss recovered": pm["loss_recovered"], "dead": int((dens[:n] == 0).sum())})
    return {"quality": _clean(quality), "owners": _clean(owners), "links": _clean(links)}


def get_matryoshka_analysis(preset=None, store=None, *, progress: bool = True, model=None, nested=None, family=None,
                            family_analysis=None, data=None, threshold: float = PAPER_THRESHOLD) -> MatryoshkaAnalysis:
    """``matryoshka_analysis`` of model A's nested SAE and family A on notebook 05's held-out rows
    (``universality.token_rows``, subdomain labels), computed once, then loaded from the artifact store.
    Builds what is missing; pass what is already loaded to skip loading it."""
    p, s = resolve(preset, store)
    model = model if model is not None else get_model(p, s, which="A", progress=progress)
    nested = nested if nested is not None else get_matryoshka_sae(p, s, progress=progress)
    family = family if family is not None else get_sae_family(p, s, which="A", progress=progress)
    data = data if data is not None else get_tokens(p, s)
    if family_analysis is None:
        family_analysis = get_family_analysis(p, s, progress=progress, model=model, family=family, data=data,
                                              threshold=threshold)
    tokens, _, sub, desc = token_rows(p, data)
    sizes = _check_family(sorted(family))
    # each prefix is evaluated as the nested SAE itself was (a side run's evaluation on default)
    eval_tokens = int(matryoshka_eval_preset(p).eval_tokens)
    config = {"model": input_id(model_folder(model)), "nested": input_id(nested),
              "family": {str(n): input_id(family[n]) for n in sizes}, "family_analysis": family_analysis.params,
              "tokens": desc, "labels": "subdomain", "eval_tokens": eval_tokens, "threshold": float(threshold),
              "min_cos": MIN_COS, "min_tokens": MIN_TOKENS, "version": 1}

    def compute():
        tv, _, _ = data.split("val")
        res = matryoshka_analysis(model, nested, family, tokens, sub, list(data.subdomain_names),
                                  family_analysis.graph, tv, eval_tokens, store=s, threshold=threshold,
                                  progress=progress)
        return {"sizes": np.asarray(sizes, np.int64)}, {**res, "params": config}

    _, meta = cached_result(f"matryoshka-{p.name}", config, compute, s)
    tables = {k: pd.DataFrame(meta[k], columns=cols) for k, cols in COLUMNS.items()}
    return MatryoshkaAnalysis(sizes, tables["quality"], tables["owners"], tables["links"], meta["params"])


# ---------------------------------------------------------------- notebook 05's views
COLORS = {NESTED: "#1f77b4", FAMILY: "#ff7f0e"}


def quality_table(an: MatryoshkaAnalysis) -> pd.DataFrame:
    """Reconstruction at each width, the nested prefix beside the family's SAE (rounded)."""
    return an.quality.set_index(["width", "dictionary"]).sort_index().round(3)


def links_table(an: MatryoshkaAnalysis) -> pd.DataFrame:
    """The splitting links at each step: the family's between separate SAEs; the nested SAE's from the
    features added at a width to the earlier ones."""
    return an.links.set_index(["step", "dictionary"]).round(3)


def owners_table(an: MatryoshkaAnalysis, column: str = "absorption") -> pd.DataFrame:
    """One row per domain, one column per (dictionary, width) of ``column`` (rounded)."""
    t = an.owners.pivot_table(index="domain", columns=["dictionary", "width"], values=column)
    return t.round(3)


def gain_report(an: MatryoshkaAnalysis, small: float = 0.02) -> str:
    """What the comparison says, in numbers taken from it (rounded): at the widest width, the mean
    absorption and owner recall of each dictionary, how many domains keep their first owner, and the
    reconstruction each pays; the gain is called small when absorption differs by less than ``small``
    (a share of the domain's tokens)."""
    s = an.summary()
    q = an.quality.set_index(["dictionary", "width"])
    w, w0 = max(an.sizes), min(an.sizes)
    nest, fam = s.loc[(NESTED, w)], s.loc[(FAMILY, w)]
    diff = fam["absorption"] - nest["absorption"]
    lines = [f"At {w:,} features, over {int(nest['domains'])} domains: mean absorption {nest['absorption']:.3f} "
             f"(nested) against {fam['absorption']:.3f} (family); owner recall {nest['owner recall']:.2f} "
             f"against {fam['owner recall']:.2f}.",
             f"Domains whose {w:,}-feature owner is the {w0:,}-feature owner (nested) or descends from it "
             f"(family): {int(nest['keeps first owner'])} against {int(fam['keeps first owner'])}.",
             f"Reconstruction at {w:,}: FVU {q.loc[(NESTED, w), 'FVU']:.3f} (nested) against "
             f"{q.loc[(FAMILY, w), 'FVU']:.3f} (family); at {w0:,}: {q.loc[(NESTED, w0), 'FVU']:.3f} against "
             f"{q.loc[(FAMILY, w0), 'FVU']:.3f}."]
    if abs(diff) < small:
        lines.append(f"The difference in absorption ({diff:+.3f}) is under {small:.2f}: at these widths the nested "
                     f"dictionary gains little on this measure.")
    elif diff > 0:
        lines.append(f"The nested dictionary's owners are absorbed less ({diff:+.3f} of their domains' tokens).")
    else:
        lines.append(f"The nested dictionary's owners are absorbed more ({diff:+.3f}): no gain on this measure here.")
    return "\n".join(lines)


def matryoshka_figure(an: MatryoshkaAnalysis):
    """Owner recall and absorption rate by width, nested against family: one thin line per domain
    (hover: its name), the mean over domains thick."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    from plotly.subplots import make_subplots  # lazy: plotly is heavy: figures only
    panels = (("recall", "owner's recall on its domain"), ("absorption", "absorption rate of the owner"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in panels])
    o = an.owners
    for col, (key, _) in enumerate(panels, start=1):
        for kind in (FAMILY, NESTED):
            sub = o[o.dictionary == kind]
            for dom, g in sub.groupby("domain"):
                g = g.sort_values("width")
                fig.add_trace(go.Scatter(x=g.width, y=g[key], mode="lines", line=dict(color=COLORS[kind], width=1),
                                         opacity=0.25, name=dom, legendgroup=kind, showlegend=False,
                                         hovertemplate=f"{dom} ({kind})<br>width %{{x}}<br>{key} %{{y:.3f}}<extra></extra>"),
                              row=1, col=col)
            mean = sub.groupby("width")[key].mean()
            fig.add_trace(go.Scatter(x=mean.index, y=mean.values, mode="lines+markers", name=f"{kind}: mean over domains",
                                     line=dict(color=COLORS[kind], width=4), legendgroup=kind, showlegend=col == 1,
                                     hovertemplate=f"{kind} mean<br>width %{{x}}<br>{key} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(type="log", tickvals=an.sizes, ticktext=[f"{n:,}" for n in an.sizes], title_text="width (features)")
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(title="Does each domain keep one owner as the dictionary grows? Nested (one Matryoshka SAE) "
                            "against separate SAEs", height=420, legend=dict(orientation="h", y=-0.25),
                      margin=dict(t=70, b=40, l=50, r=10))
    return fig
