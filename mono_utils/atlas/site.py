"""The feature atlas: every unit of a build as a static web site that opens from ``file://``.

The paper published, beside its text, a browsable visualization of every feature; this module
writes ours from the built artifacts. ``build_atlas(preset, out)`` gathers, for each *unit set*
(A/1's features, model A's neurons, and optionally B/1 and B's neurons, the TopK SAE, members
of the A family), what notebook 02's dashboard shows (density, activation histogram, logit
weights, domains, top examples and samples from 11 activation intervals) from the activation
index, joins what the build knows about each unit (its A<->B match, its parent and children in
the family, its offline autointerp explanation and score, its steering-catalog entry), and
writes plain files:

    <out>/index.html, assets/atlas.js, assets/atlas.css   (vanilla JS, no CDN)
    <out>/data/meta.js                                     (the sets, labels, build facts)
    <out>/data/vocab.js                                    (every token's text)
    <out>/data/<set>/units.js                              (one row per unit: the index page)
    <out>/data/<set>/tokens.js                             (token search, loaded on the first search)
    <out>/data/<set>/d/<shard>.js                          (dashboards, SHARD units a file, on demand)

Browsers block ``fetch()`` of local JSON on ``file://``, so every data file is a script that
hands its JSON to ``ATLAS.put(key, value)``; the page loads them as ``<script>`` elements when
needed. Nothing outside the folder is ever requested.

Activations inside an example context are stored as per-mille of the unit's maximum activation
(0..1000, enough for shading and a hover readout); each example's own activation is exact to
four significant figures.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..autointerp.run import get_offline_scores
from ..pipeline.indexes import get_index, get_paper_index, get_topk_index
from ..pipeline.models import get_model, get_tokenizer
from ..pipeline.presets import Preset, resolve
from ..pipeline.saes import get_paper_sae, get_sae, get_sae_family, get_topk_sae
from ..pipeline.transcoders import get_transcoder, get_transcoder_index, transcoder_logit_weights
from ..core.index import ActivationIndex
from ..core.model import direction_logit_weights, model_config_of
from ..features.dashboards import vocab_strings
from ..splitting.family import get_family_analysis
from ..steering.catalog import DEMO_DOMAINS, get_feature_catalog, token_bytes
from ..store.artifacts import ArtifactStore, repo_root
from ..universality.cache import get_comparison
from .live import check_libraries, write_atlas_live

ATLAS_VERSION = 1
MARKER = "atlas.json"          # marks a folder as an atlas (only such a folder is ever replaced)
SHARD = 32                     # dashboards per data file
ASSETS = Path(__file__).resolve().parent / "assets"
ASSET_FILES = ("index.html", "atlas.js", "atlas.css")

# notebook 02's dashboard parameters (dashboards.dashboard_data's defaults)
DASH = {"k_top": 10, "n_intervals": 11, "per_interval": 2, "seed": 0, "before": 12, "after": 4,
        "n_logits": 10, "act_bins": 30, "logit_bins": 40}
TOKEN_TOP = 12                 # units listed per token in the token search
LABEL_MIN_COUNT = 5            # widgets.units_for_domain's minimum firings for a label search


# ---------------------------------------------------------------- unit sets
@dataclass
class UnitSet:
    """One browsable set of units: a kind ("feature" or "neuron") of one activation index."""
    key: str                    # file-safe id: "A1", "AN", "B1", "BN", "A1topk", "A1paper", "Af2048"
    label: str                  # shown: "A/1", "A neurons", ...
    model: str                  # "A" or "B"
    kind: str                   # "feature" or "neuron"
    index: ActivationIndex
    logits: np.ndarray          # [n_units, d_vocab] logit weights (model.direction_logit_weights)
    source: str = ""            # the artifact folders it was read from
    family_size: int | None = None
    extras: dict = field(default_factory=dict)   # {unit: {...}} joined from the cached analyses

    @property
    def n_units(self) -> int:
        return self.index.n_units(self.kind)


def parse_sae_option(spec: str, preset: Preset) -> str:
    """A ``--sae`` value in canonical form: "topk", "paper2023", "B/1", "A/<size>" (a family member)
    or "family"."""
    s = spec.strip()
    low = s.lower()
    if low in ("topk", "a/1-topk", "a/1 topk"):
        return "topk"
    if low in ("paper2023", "paper", "a/1-paper2023", "a/1 paper2023"):
        return "paper2023"
    if low in ("transcoder", "tc", "a transcoder"):
        return "transcoder"
    if low in ("b/1", "b1", "b"):
        return "B/1"
    if low in ("a/1", "a1", "a", f"a/{preset.sae_main}"):
        return "A/1"
    if low == "family":
        return "family"
    if low.startswith("a/") and low[2:].isdigit():
        n = int(low[2:])
        if n in preset.sae_sizes:
            return "A/1" if n == preset.sae_main else f"A/{n}"
    sizes = ", ".join(f"A/{n}" for n in preset.sae_sizes)
    raise ValueError(f"unknown --sae {spec!r}: use topk, paper2023, transcoder, B/1, family, or a family member "
                     f"of preset "
                     f"{preset.name!r} ({sizes}; A/{preset.sae_main} is A/1, always included)")


def _family_key(n: int, preset: Preset) -> str:
    return "A1" if n == preset.sae_main else f"Af{n}"


# ---------------------------------------------------------------- small helpers
def _r(x, digits: int = 4):
    """A float rounded to ``digits`` significant figures (None for NaN/inf), for compact JSON."""
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0:
        return 0
    v = float(f"{x:.{digits}g}")
    return int(v) if v.is_integer() and abs(v) < 1e15 else v


def _hist(values: np.ndarray, bins: int) -> tuple[list[int], list]:
    if len(values) == 0:
        return [], []
    counts, edges = np.histogram(values, bins=bins)
    return counts.tolist(), [_r(edges[0], 5), _r(edges[-1], 5)]   # equal-width bins: two edges say all


# ---------------------------------------------------------------- per-unit dashboards
def _window(index: ActivationIndex, pos: np.ndarray, val: np.ndarray, row: int, p: int, scale: float,
            before: int, after: int) -> list:
    """One example context: [row, pos, start, act, token ids, per-mille activations]."""
    n_ctx = index.n_ctx
    lo, hi = max(0, p - before), min(n_ctx, p + after + 1)
    a, b = np.searchsorted(pos, [row * n_ctx + lo, row * n_ctx + hi])
    acts = np.zeros(hi - lo, np.float32)
    acts[pos[a:b] - (row * n_ctx + lo)] = val[a:b]
    at = float(acts[p - lo])
    q = np.rint(np.clip(acts / scale, 0, 1) * 1000).astype(int).tolist() if scale > 0 else [0] * len(acts)
    return [int(row), int(p), int(lo), _r(at), index.tokens[row, lo:hi].astype(int).tolist(), q]


def unit_record(index: ActivationIndex, kind: str, unit: int, logit_row: np.ndarray, ultralow: bool,
                dash: dict = DASH, entries: tuple | None = None) -> dict:
    """Everything a unit's page shows (notebook 02's dashboard without the ablation underlines).

    ``entries``: the unit's ``index.unit_entries`` if already read."""
    pos, val = entries if entries is not None else index.unit_entries(kind, unit)
    entries = (pos, val)
    u = index._u(kind)
    count = int(len(val))
    mx = float(u.max[unit])
    rec = {"u": int(unit), "n": count, "d": _r(count / max(1, index.n_tokens)), "mx": _r(mx),
           "flag": 1 if count == 0 else 2 if ultralow else 0}
    rec["ah"], rec["ar"] = _hist(val, dash["act_bins"])
    order = np.argsort(logit_row, kind="stable")
    k = dash["n_logits"]
    rec["lt"] = [[int(i), _r(logit_row[i])] for i in order[::-1][:k]]
    rec["lb"] = [[int(i), _r(logit_row[i])] for i in order[:k]]
    rec["lh"], rec["lr"] = _hist(logit_row, dash["logit_bins"])
    rec["dc"] = u.domain_counts[unit].astype(int).tolist()
    sc = u.subdomain_counts[unit]
    top_sub = [j for j in np.argsort(-sc, kind="stable")[:8] if sc[j] > 0]
    rec["sc"] = [[int(j), int(sc[j])] for j in top_sub]
    w = lambda r, p: _window(index, pos, val, r, p, mx, dash["before"], dash["after"])  # noqa: E731
    rec["top"] = [w(r, p) for r, p, _ in index.top_examples(kind, unit, dash["k_top"], entries=entries)]
    rec["iv"] = [[_r(it["lo"]), _r(it["hi"]), it["n"], [w(r, p) for r, p, _ in it["examples"]]]
                 for it in index.interval_samples(kind, unit, dash["n_intervals"], dash["per_interval"],
                                                  dash["seed"], entries=entries)]
    return rec


def top_token_ids(rec: dict, n: int = 4) -> list[int]:
    """Distinct tokens at the peaks of a unit's top examples (its short label), strongest first."""
    out = []
    for ctx in rec["top"]:
        t = ctx[4][ctx[1] - ctx[2]]
        if t not in out:
            out.append(t)
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------- token search
class TokenTable:
    """For each token of the indexed text, the units with the highest mean activation on it.

    The mean is over every occurrence of the token in the index, a unit counting 0 where it does
    not fire; ``fires`` is the share of the occurrences where the unit fires. This is notebook 02's
    ``widgets.units_for_token`` with two differences: it averages over all occurrences (the widget
    samples 256 and runs the model on them), and a neuron's small negative GELU values, which the
    index does not store, count as 0 here (the widget averages them in). Units are added one at a time from entries
    already read (``add``); ``finish(k)`` gives ``{token id: [[unit, mean, fires], ...]}`` and
    the occurrence counts under ``"_occ"``.
    """

    def __init__(self, index: ActivationIndex, n_units: int):
        self.flat = index.tokens.reshape(-1).astype(np.int64)
        self.d_vocab = int(self.flat.max()) + 1 if self.flat.size else 1
        self.occ = np.bincount(self.flat, minlength=self.d_vocab)
        self.sums = np.zeros((self.d_vocab, n_units), np.float32)
        self.fires = np.zeros((self.d_vocab, n_units), np.int32)

    def add(self, unit: int, pos: np.ndarray, val: np.ndarray) -> None:
        if len(pos):
            t = self.flat[pos]
            self.sums[:, unit] = np.bincount(t, weights=val, minlength=self.d_vocab)
            self.fires[:, unit] = np.bincount(t, minlength=self.d_vocab)

    def finish(self, k: int = TOKEN_TOP) -> dict:
        seen = np.flatnonzero(self.occ)
        mean = self.sums[seen] / self.occ[seen, None]
        kk = min(k, mean.shape[1])
        part = np.argpartition(-mean, kk - 1, axis=1)[:, :kk]
        out = {}
        for r, t in enumerate(seen):
            cand = part[r]
            m = mean[r, cand]
            order = np.lexsort((cand, -m))           # highest mean first, ties by unit number
            rows = [[int(cand[j]), _r(m[j], 3), _r(self.fires[t, cand[j]] / self.occ[t], 3)]
                    for j in order if m[j] > 0]
            if rows:
                out[str(int(t))] = rows
        out["_occ"] = {str(int(t)): int(self.occ[t]) for t in seen}
        return out


def token_table(index: ActivationIndex, kind: str, k: int = TOKEN_TOP) -> dict:
    """``TokenTable`` of every unit of one kind (see there)."""
    table = TokenTable(index, index.n_units(kind))
    for unit in range(index.n_units(kind)):
        table.add(unit, *index.unit_entries(kind, unit))
    return table.finish(k)


# ---------------------------------------------------------------- what the build knows (joins)
def join_universality(sets: dict, res, preset: Preset) -> dict:
    """A<->B matches (notebook 04: A's unit -> its most correlated unit of B) into the sets' extras.

    Features: A/1 -> B/1; neurons: A's -> B's. B's side lists the A units matched to it (the
    comparison is computed from A to B only). Units left out of the comparison (dead, ultralow,
    too few firings) say so.
    """
    stats = {"features": res.features.summary(), "neurons": res.neurons.summary(),
             "min_count": res.params.get("min_count"), "n_tokens": res.params.get("tokens", {}).get("rows")}
    pairs = (("features", "A1", "B1", res.logit_sim), ("neurons", "AN", "BN", res.neuron_logit_sim))
    for what, ka, kb, lsim in pairs:
        m = getattr(res, what)
        attr = res.attribution_sim if what == "features" else None
        a_side = sets.get(ka)
        if a_side is not None:
            for i in range(len(m.match)):
                j = int(m.match[i])
                if j < 0:
                    a_side.extras.setdefault(i, {})["ab"] = {"to": kb, "excluded": True}
                else:
                    a_side.extras.setdefault(i, {})["ab"] = {
                        "to": kb, "unit": j, "corr": _r(m.max_corr[i], 3), "logit_sim": _r(lsim[i], 3),
                        "attr_sim": None if attr is None else _r(attr[i], 3)}
        b_side = sets.get(kb)
        if b_side is not None:
            rev: dict[int, list] = {}
            for i in np.flatnonzero(m.match >= 0):
                rev.setdefault(int(m.match[i]), []).append([int(i), _r(m.max_corr[i], 3)])
            for j in range(len(m.live_b)):
                got = sorted(rev.get(j, []), key=lambda x: -(x[1] or 0))
                b_side.extras.setdefault(j, {})["ba"] = {"from": ka, "units": got[:10], "n": len(got),
                                                         "live": bool(m.live_b[j])}
    return stats


def join_family(sets: dict, analysis, preset: Preset) -> dict:
    """Parents and children across the family's sizes (notebook 05's links) into the sets' extras."""
    g = analysis.graph
    keys = [_family_key(n, preset) for n in g.sizes]
    for lv, n in enumerate(g.sizes):
        us = sets.get(keys[lv])
        if us is None:
            continue
        kids_of = {}
        if lv + 1 < len(g.sizes):
            par = g.parent[lv + 1]
            for c in np.flatnonzero(par >= 0):
                kids_of.setdefault(int(par[c]), []).append([int(c), _r(g.parent_sim[lv + 1][c], 3)])
        for f in range(n):
            e = {"size": n, "sizes": g.sizes, "keys": keys, "level": lv, "linked": bool(g.live[lv][f])}
            p = int(g.parent[lv][f]) if lv else -1
            if p >= 0:
                e["parent"] = [keys[lv - 1], p, _r(g.parent_sim[lv][f], 3)]
            if lv + 1 < len(g.sizes):
                e["children"] = [keys[lv + 1], sorted(kids_of.get(f, []), key=lambda x: -(x[1] or 0))]
            us.extras.setdefault(f, {})["fam"] = e
    return {"sizes": g.sizes, "threshold": g.threshold, "summary": g.summary()}


def join_autointerp(sets: dict, scores: dict) -> dict:
    """The offline backend's explanation and scores (notebook 03) into A/1's and A's neurons' extras."""
    out = {}
    for kind, key in (("feature", "A1"), ("neuron", "AN"), ("feature_paper2023", "A1paper")):
        df = scores.get(kind)
        us = sets.get(key)
        if df is None or us is None:
            continue
        n_ok = 0
        for row in df.to_dict("records"):
            e = {"status": str(row.get("status", "")), "expl": str(row.get("explanation") or ""),
                 "spearman": _r(row.get("spearman", float("nan")), 3), "pearson": _r(row.get("pearson", float("nan")), 3),
                 "logit_acc": _r(row.get("logit_accuracy", float("nan")), 3),
                 "single_token": bool(row.get("single_token", False))}
            n_ok += e["status"] == "ok"
            us.extras.setdefault(int(row["unit"]), {})["ai"] = e
        out[key] = {"scored": int(len(df)), "ok": n_ok,
                    "median_spearman": _r(np.nanmedian(df["spearman"].to_numpy(float)), 3) if len(df) else None}
    return out


def join_steering(sets: dict, catalog, demo_domains=None) -> dict:
    """Each A/1 feature's steering-catalog entry (notebook 06's picker) into its extras."""
    us = sets.get("A1")
    if us is None:
        return {}
    demo = {}
    for dom in (demo_domains or DEMO_DOMAINS):
        if dom in catalog.subdomain_names:
            demo[int(catalog.domain_feature(dom))] = dom
    for i in range(len(catalog.max_act)):
        sub, share = catalog.top_subdomain(i)
        e = {"sub": sub, "share": _r(share, 3), "tokens": list(catalog.top_tokens[i][:6]),
             "max": _r(catalog.max_act[i]), "density": _r(catalog.density[i], 3)}
        if i in demo:
            e["demo"] = demo[i]
        us.extras.setdefault(i, {})["st"] = e
    return {"rows_tokens": int(catalog.n_tokens), "demo": {v: k for k, v in demo.items()}}


# ---------------------------------------------------------------- writing
def _js(key: str, obj) -> str:
    return ("ATLAS.put(" + json.dumps(key) + "," +
            json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + ");\n")


def _write(path: Path, text: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(data)
    return len(data)


def set_summary(us: UnitSet, records: list[dict], index_info: dict) -> dict:
    """The index page's table for one set: one row per unit, columns as arrays."""
    idx, kind = us.index, us.kind
    u = idx._u(kind)
    n_tok = max(1, idx.n_tokens)
    sub_sparse = []
    for i in range(us.n_units):
        sc = u.subdomain_counts[i]
        nz = np.flatnonzero(sc)
        sub_sparse.append([v for j in nz for v in (int(j), int(sc[j]))])
    col = lambda key, fn: [fn(us.extras.get(i, {}).get(key)) for i in range(us.n_units)]  # noqa: E731
    summary = {
        "key": us.key, "label": us.label, "model": us.model, "kind": kind, "n_units": us.n_units,
        "n_tokens": idx.n_tokens, "shard": SHARD, "source": us.source,
        "ultralow_density": _r(idx.ultralow_density, 4),
        "cols": {
            "n": [int(c) for c in u.count],
            "d": [_r(c / n_tok) for c in u.count],
            "mx": [_r(x) for x in np.asarray(u.max)],
            "flag": [r["flag"] for r in records],
            "lab": [top_token_ids(r) for r in records],
            "dc": u.domain_counts.astype(int).tolist(),
            "sc": sub_sparse,
            "ai": col("ai", lambda e: e.get("spearman") if e else None),
            "ab": col("ab", lambda e: e.get("corr") if e else None),
        },
        **index_info,
    }
    return summary


def write_set(out: Path, us: UnitSet, progress: bool = True) -> dict:
    """The set's data files (units, tokens, dashboard shards); returns bytes and seconds per part.

    One pass over the units: each unit's entries are read once for its page and the token table."""
    idx, kind = us.index, us.kind
    t0 = time.time()
    ultra = idx.ultralow_mask(kind)
    tokens = TokenTable(idx, us.n_units)
    records = []
    base = out / "data" / us.key
    sizes = {"dashboards": 0}
    shard: list[dict] = []
    for unit in tqdm(range(us.n_units), desc=f"atlas {us.label}", disable=not progress):
        entries = idx.unit_entries(kind, unit)
        tokens.add(unit, *entries)
        rec = unit_record(idx, kind, unit, us.logits[unit], bool(ultra[unit]), entries=entries)
        x = us.extras.get(unit)
        if x:
            rec["x"] = x
        records.append({k: rec[k] for k in ("flag", "top")})
        shard.append(rec)
        if len(shard) == SHARD or unit == us.n_units - 1:
            s = unit // SHARD
            sizes["dashboards"] += _write(base / "d" / f"{s:04d}.js", _js(f"{us.key}/d/{s}", shard))
            shard = []
    t1 = time.time()
    info = {"domain_names": idx.domain_names, "subdomain_names": idx.subdomain_names,
            "domain_base": [_r(v, 4) for v in idx.label_base_rate("domain").values()],
            "subdomain_base": [_r(v, 4) for v in idx.label_base_rate("subdomain").values()],
            "label_min_count": LABEL_MIN_COUNT}
    summary = set_summary(us, records, info)
    sizes["units"] = _write(base / "units.js", _js(f"{us.key}/units", summary))
    sizes["tokens"] = _write(base / "tokens.js", _js(f"{us.key}/tokens", tokens.finish()))
    return {"bytes": sizes, "seconds": round(time.time() - t0, 1), "seconds_pages": round(t1 - t0, 1)}


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def folder_bytes(folder: str | Path) -> int:
    """Total size of the files under ``folder`` (bytes, not disk blocks)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def check_out(out: str | Path) -> Path:
    """``out`` as a Path if an atlas may be written there: new, empty, or an older atlas."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} is a file: give a folder for the atlas")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ValueError(f"--out {out} exists and is not an atlas (no {MARKER}): it is left untouched; "
                             f"choose an empty or new folder")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:        # alive, but another user's
        return True
    return True


def clean_stale_stages(out: Path) -> list[Path]:
    """Remove the ``.<out>.partial-PID`` / ``.old-PID`` folders beside ``out`` whose writer is dead
    (an interrupted or killed atlas build); a live writer's are left alone. Returns those removed."""
    removed = []
    for leftover in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind, _, pid = leftover.name[len(out.name) + 2:].rpartition("-")
        if kind in ("partial", "old") and pid.isdigit() and leftover.is_dir() and not leftover.is_symlink() \
                and not _pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def _own_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (links too, not followed), as sorted POSIX paths relative to it."""
    return sorted(str((Path(d) / f).relative_to(folder).as_posix()) for d, dirs, files in os.walk(folder)
                  for f in files + [x for x in dirs if (Path(d) / x).is_symlink()])


def _prepare_out(out: Path) -> Path:
    """A fresh staging folder next to ``out`` (see ``check_out``)."""
    out = check_out(out)
    if out.parent.is_dir():
        clean_stale_stages(out)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def _keep_foreign_files(stage: Path, out: Path) -> list[str]:
    """Move the files of the old atlas ``out`` that no atlas wrote (a teacher's notes, slides) into
    ``stage``, so that rewriting the atlas keeps them; returns their paths. An atlas's own files are
    those its ``atlas.json`` lists (older atlases list none: then those the new one writes too)."""
    if not (out / MARKER).is_file():
        return []
    try:
        listed = set(json.loads((out / MARKER).read_text(encoding="utf-8")).get("files") or ())
    except (ValueError, AttributeError, OSError):
        listed = set()
    kept = []
    for rel in _own_files(out):
        if rel in listed or rel == MARKER or (stage / rel).exists() or (stage / rel).is_symlink():
            continue
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).rename(stage / rel)
        kept.append(rel)
    return kept


def _swap_in(stage: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``stage`` (the old atlas is removed only after the rename)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_site(out: str | Path, sets: list[UnitSet], vocab: list[str], meta: dict, progress: bool = True,
               vocab_bytes: list[bytes] | None = None, live=None) -> dict:
    """Write the whole site for ``sets`` into ``out`` (staged, then swapped in); returns a report.

    ``vocab_bytes``: each token's raw bytes (byte-level BPE), so that the page can decode a context's
    multi-byte characters across token boundaries (a Hebrew letter is often split in two tokens).
    ``live``: ``f(stage folder) -> report``, writes the live model into the folder (atlas.live)."""
    out = Path(out)
    stage = _prepare_out(out)
    try:
        t0 = time.time()
        for name in ASSET_FILES:
            dst = stage / (name if name == "index.html" else f"assets/{name}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ASSETS / name, dst)
        _write(stage / "data" / "vocab.js", _js("vocab", list(vocab)) +
               (_js("vocabhex", [b.hex() for b in vocab_bytes]) if vocab_bytes is not None else ""))
        report = {"sets": {}}
        for i, us in enumerate(sets):
            report["sets"][us.key] = write_set(stage, us, progress)
            if all(later.index is not us.index for later in sets[i + 1:]):
                # done with this index (A/1 and A's neurons share one): its memory-mapped pages
                # would otherwise stay resident beside the next ones (peak 4.3 GB with B/1 and paper2023)
                us.index.release_pages()
        if live is not None:
            report["live"] = live(stage)
        meta = {**meta, "version": ATLAS_VERSION,
                "sets": [{"key": s.key, "label": s.label, "model": s.model, "kind": s.kind, "n_units": s.n_units,
                          "family_size": s.family_size} for s in sets]}
        _write(stage / "data" / "meta.js", _js("meta", meta))
        report["seconds_write"] = round(time.time() - t0, 1)
        report["bytes"] = folder_bytes(stage)
        report["files"] = sum(1 for p in stage.rglob("*") if p.is_file())
        written = _own_files(stage)
        report["kept"] = _keep_foreign_files(stage, out) if out.exists() else []
        (stage / MARKER).write_text(json.dumps({"version": ATLAS_VERSION, "built": meta.get("built"),
                                                "sets": [s.key for s in sets], "bytes": report["bytes"],
                                                "files": written}, indent=1))
        _swap_in(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


# ---------------------------------------------------------------- the build
class NotBuilt(LookupError):
    """An artifact the atlas reads is not in the store, and the store may not build it."""

    def __init__(self, message: str, artifact: str = ""):
        super().__init__(message)
        self.artifact = artifact    # kind/name, without the store's path (the page is published)


class ReadOnlyStore(ArtifactStore):
    """The same store, which loads what is built and raises ``NotBuilt`` instead of building."""

    def __init__(self, store: ArtifactStore):
        super().__init__(store.root)

    def get_or_build(self, kind: str, name: str, config: dict, build, *, force: bool = False,
                     verbose: bool = True) -> Path:
        if force or not self.is_built(kind, name, config):
            raise NotBuilt(f"{kind}/{name} is not built in {self.root}", f"{kind}/{name}")
        return super().get_or_build(kind, name, config, build, verbose=verbose)


def load_sets(preset, store=None, saes=(), progress: bool = True) -> tuple[list[UnitSet], dict]:
    """The unit sets to show (A/1 + A's neurons, plus ``saes``), built through the suite's getters."""
    p, s = resolve(preset, store)
    wanted = []
    for spec in saes:
        c = parse_sae_option(spec, p)
        if c == "family":
            wanted += [f"A/{n}" for n in p.sae_sizes if n != p.sae_main]
        elif c != "A/1":
            wanted.append(c)
    wanted = list(dict.fromkeys(wanted))
    loaded = {"models": {}, "saes": {}}

    def logits(model, sae=None):
        with torch.no_grad():
            dirs = sae.W_dec_raw.detach() if sae is not None else torch.eye(model_config_of(model).d_mlp)
            return direction_logit_weights(model, dirs).cpu().numpy()

    def model(w):
        if w not in loaded["models"]:
            loaded["models"][w] = get_model(p, s, which=w, progress=progress)
        return loaded["models"][w]

    def src(idx, sae=None):
        return " + ".join(x for x in (Path(idx.folder).name if idx.folder else "",
                                      Path(sae.folder).name if getattr(sae, "folder", None) else "") if x)

    sae_a = get_sae(p, s, which="A", progress=progress)
    loaded["saes"]["A/1"] = sae_a
    idx_a = get_index(p, s, which="A", progress=progress, sae=sae_a, model=model("A"))
    sets = [UnitSet("A1", "A/1", "A", "feature", idx_a, logits(model("A"), sae_a), src(idx_a, sae_a),
                    family_size=p.sae_main),
            UnitSet("AN", "A neurons", "A", "neuron", idx_a, logits(model("A")), src(idx_a))]
    for c in wanted:
        if c == "B/1":
            sae_b = get_sae(p, s, which="B", progress=progress)
            loaded["saes"]["B/1"] = sae_b
            idx_b = get_index(p, s, which="B", progress=progress, sae=sae_b, model=model("B"))
            sets += [UnitSet("B1", "B/1", "B", "feature", idx_b, logits(model("B"), sae_b), src(idx_b, sae_b)),
                     UnitSet("BN", "B neurons", "B", "neuron", idx_b, logits(model("B")), src(idx_b))]
        elif c == "topk":
            idx_t = get_topk_index(p, s, which="A", progress=progress, model=model("A"))
            sae_t = get_topk_sae(p, s, which="A", progress=progress)
            sets.append(UnitSet("A1topk", "A/1 TopK", "A", "feature", idx_t, logits(model("A"), sae_t),
                                src(idx_t, sae_t)))
        elif c == "paper2023":
            if p.sae_recipe == "paper2023":   # A/1 is the paper's recipe: already in the atlas
                continue
            idx_p = get_paper_index(p, s, which="A", progress=progress, model=model("A"))
            sae_p = get_paper_sae(p, s, which="A", progress=progress)
            sets.append(UnitSet("A1paper", "A/1 paper2023", "A", "feature", idx_p, logits(model("A"), sae_p),
                                src(idx_p, sae_p)))
        elif c == "transcoder":   # notebook 07: its features read the MLP's input and write its output
            trc = get_transcoder(p, s, which="A", progress=progress)
            idx_c = get_transcoder_index(p, s, which="A", progress=progress, model=model("A"))
            sets.append(UnitSet("Atc", "A transcoder", "A", "feature", idx_c,
                                transcoder_logit_weights(trc, model("A")).cpu().numpy(), src(idx_c, trc)))
        else:
            n = int(c.split("/")[1])
            fam = get_sae_family(p, s, which="A", progress=progress)
            idx_n = get_index(p, s, which="A", d_sae=n, progress=progress, sae=fam[n], model=model("A"))
            sets.append(UnitSet(_family_key(n, p), f"A family {n:,}", "A", "feature", idx_n,
                                logits(model("A"), fam[n]), src(idx_n, fam[n]), family_size=n))
    return sets, loaded


def build_atlas(preset=None, out: str | Path = "atlas", saes=(), store: ArtifactStore | None = None,
                progress: bool = True, build_missing: bool = True, live: bool = True) -> dict:
    """Write the atlas of a build into ``out``; builds every missing artifact it reads first.

    Always A/1's features and model A's neurons; ``saes``: any of "topk", "paper2023", "B/1", "A/<size>" (a
    family member) or "family". ``build_missing=False`` builds nothing: the unit sets' indexes must
    be built, and an analysis that is not (A<->B, family, autointerp, steering catalog) is left
    out and named in the site. ``live`` (default) adds model A and the SAEs on it as ONNX with the
    page's runtime (atlas.live: try your own text, steer); ``live=False`` writes the static atlas
    alone. Returns a report: bytes, files, seconds per part.
    """
    p, s = resolve(preset, store)
    for spec in saes:            # bad options fail before anything is loaded or built
        parse_sae_option(spec, p)
    check_out(out)
    if live:                     # the page's JavaScript libraries: missing ones fail before anything is built
        check_libraries()
    if not build_missing:
        s = ReadOnlyStore(s)
    t0 = time.time()
    try:
        tok = get_tokenizer(p, s)
        sets, loaded = load_sets(p, s, saes, progress)
    except NotBuilt as e:
        raise ValueError(f"{e}: the unit sets need it; build it (python -m mono_utils build --preset {p.name}) "
                         f"or leave out --no-build") from None
    vocab = vocab_strings(tok)
    t_load = time.time()
    by_key = {u.key: u for u in sets}
    knows, timing = {}, {}
    model = lambda w: loaded["models"].get(w) or get_model(p, s, which=w, progress=progress)  # noqa: E731
    sae = lambda w: loaded["saes"].get(f"{w}/1") or get_sae(p, s, which=w, progress=progress)  # noqa: E731
    joins = {   # what the build knows about the units, each from its cached analysis (built here if missing)
        "universality": lambda: join_universality(by_key, get_comparison(
            p, s, progress=progress, models=(model("A"), model("B")), saes=(sae("A"), sae("B"))), p),
        "family": lambda: join_family(by_key, get_family_analysis(
            p, s, progress=progress, model=model("A"), family=get_sae_family(p, s, which="A", progress=progress),
            tokenizer=tok), p),
        "autointerp": lambda: join_autointerp(by_key, get_offline_scores(p, s, progress=progress)),
        "steering": lambda: join_steering(by_key, get_feature_catalog(p, s, model=model("A"), sae=sae("A"),
                                                                      tokenizer=tok, progress=progress)),
    }
    for name, join in joins.items():
        t = time.time()
        try:
            knows[name] = join()
        except NotBuilt as e:   # the page says what is missing, never where the teacher's store is
            knows[name] = {"missing": f"{e.artifact or 'an artifact'} is not built (--no-build)"}
        timing[name] = round(time.time() - t, 1)
    t_joins = time.time()
    meta = {"title": f"monosemanticity-lab atlas: {p.name}", "preset": p.name,
            "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _git_commit(),
            "knows": knows, "paper": "Bricken et al. (2023), Towards Monosemanticity",
            "n_ctx": int(sets[0].index.n_ctx), "dash": DASH}
    report = write_site(out, sets, vocab, meta, progress, vocab_bytes=token_bytes(tok, range(len(vocab))),
                        live=(lambda stage: write_atlas_live(stage, p, s, tok, sets, loaded)) if live else None)
    report["seconds"] = {"load": round(t_load - t0, 1), "joins": round(t_joins - t_load, 1), **timing,
                         "write": report.pop("seconds_write"), "total": round(time.time() - t0, 1)}
    report["missing"] = [k for k, v in knows.items() if "missing" in v]
    report["out"] = str(Path(out).resolve())
    return report
