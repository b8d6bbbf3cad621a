"""Computational proxies: is the best feature more specific and sensitive than the best neuron?

A proxy says, for each token, whether a context is present. The paper's four are
log-likelihood ratios ``log P(s | context) - log P(s)`` of the token string ``s``: DNA (random
strings over ACGT, counted only in runs of >= 2 such tokens), base64 (random strings over
``[A-Za-z0-9+/=]``), Hebrew and Arabic (characters of the script's Unicode block). ``P(s)`` is
the token's unigram frequency on the indexed tokens. The context is "present" where the ratio
is > 0. Every corpus domain and subdomain label is a proxy too.

For each proxy and each kind (feature, neuron) we take the units whose activation correlates
best with it (Pearson, over all indexed tokens, from the sparse index in a few passes) and keep
the one with the best F1 at its own best threshold (``detection.operating_point``). We report
specificity P(context | unit on) and sensitivity P(unit on | context), both for "on" = "> 0"
and at that threshold, with the best F1, average precision, AUROC and Pearson; and both units'
specificity at the same coverage (``specificity_at_feature_sensitivity``: each unit's best
specificity at a threshold that catches at least as much of the context as the feature does
when on). Figures: :mod:`mono_utils.proxy_plots`.

Read "on" = "> 0" with care: the best neurons here are positive on 15-55% of tokens, so at 0 they are
unspecific and sensitive by construction; the best-threshold columns compare the units fairly.
"""
from __future__ import annotations

import errno
import hashlib
import math

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..pipeline.indexes import get_index, get_paper_index, get_topk_index
from ..pipeline.models import get_tokenizer
from ..pipeline.presets import resolve
from ..core.index import ActivationIndex
from ..store.artifacts import ArtifactStore
from ..store.results import cached_result, frame_from_json, frame_to_json, input_id
from .detection import auroc, operating_point, precision_at_recall

LLR_PROXIES = ("dna", "base64", "hebrew", "arabic")
_B64 = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_DNA = set(b"ACGT")
# (UTF-8 lead bytes, code points in the block) of two-byte scripts
_SCRIPTS = {"hebrew": ({0xD6, 0xD7}, 112), "arabic": ({0xD8, 0xD9, 0xDA, 0xDB}, 256)}
_SPACE_LOGP = math.log(1 / 6)   # a space between words of ~5 characters
_BYTES_CACHE: dict[int, list[bytes]] = {}


# ---------------------------------------------------------------- token bytes
def _byte_decoder() -> dict[str, int]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer, d_vocab: int | None = None) -> list[bytes]:
    """The raw bytes of every token id (special tokens: empty)."""
    key = id(tokenizer)
    n = d_vocab or len(tokenizer)
    if key in _BYTES_CACHE and len(_BYTES_CACHE[key]) >= n:
        return _BYTES_CACHE[key]
    dec = _byte_decoder()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = []
    conv = getattr(tokenizer, "convert_ids_to_tokens", None)
    for i in range(n):
        if i in special:
            out.append(b"")
            continue
        s = conv(i) if conv is not None else None
        if isinstance(s, str) and s and all(c in dec for c in s):
            out.append(bytes(dec[c] for c in s))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    _BYTES_CACHE[key] = out
    return out


# ---------------------------------------------------------------- log-likelihood-ratio proxies
def unigram_logp(tokens: np.ndarray, d_vocab: int) -> np.ndarray:
    """log P(s) per token id from counts on ``tokens`` (add-one smoothed)."""
    c = np.bincount(np.asarray(tokens).reshape(-1).astype(np.int64), minlength=d_vocab).astype(np.float64) + 1
    return np.log(c / c.sum())


def proxy_llr(tokens: np.ndarray, tbytes: list[bytes], name: str, logp_unigram: np.ndarray) -> np.ndarray:
    """[rows, n_ctx] log P(s | context) - log P(s); -inf where the token cannot occur in the context."""
    if name not in LLR_PROXIES:
        raise ValueError(f"unknown proxy {name!r}: choose one of {', '.join(LLR_PROXIES)}")
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if int(tokens.max(initial=0)) >= len(tbytes):
        raise ValueError(f"token id {int(tokens.max())} is outside the tokenizer's {len(tbytes)} tokens: "
                         f"the index and tokenizer do not match")
    flat = tokens.reshape(-1).astype(np.int64)
    if name in ("dna", "base64"):
        alpha, size = (_DNA, 4) if name == "dna" else (_B64, 64)
        ok_v = np.array([bool(b) and all(c in alpha for c in b) for b in tbytes])
        lp_v = np.array([-len(b) * math.log(size) for b in tbytes])
        ok = ok_v[flat].reshape(tokens.shape)
        if name == "dna":  # runs of >= 2 DNA-like tokens only (a lone "A" is English)
            prev = np.zeros_like(ok)
            prev[:, 1:] = ok[:, :-1]
            nxt = np.zeros_like(ok)
            nxt[:, :-1] = ok[:, 1:]
            ok = ok & (prev | nxt)
        lp = lp_v[flat].reshape(tokens.shape)
    else:
        ok, lp = _script_proxy(tokens, tbytes, name)
    llr = lp - logp_unigram[flat].reshape(tokens.shape)
    return np.where(ok, llr, -np.inf)


def _script_proxy(tokens: np.ndarray, tbytes: list[bytes], name: str):
    """Byte-level: a token is in-script if all its bytes belong to the script's characters or spaces.

    The byte stream of each row is decoded as UTF-8 so that a token holding half a character is
    judged by the character it is part of (byte-level BPE splits characters).
    """
    leads, n_block = _SCRIPTS[name]
    n_lead = len(leads)
    lens = np.array([len(b) for b in tbytes], np.int64)
    maxlen = max(1, int(lens.max()))
    mat = np.zeros((len(tbytes), maxlen), np.uint8)
    for i, b in enumerate(tbytes):
        mat[i, :len(b)] = np.frombuffer(b, np.uint8)
    rows, n_ctx = tokens.shape
    ok = np.zeros(tokens.shape, bool)
    lp = np.zeros(tokens.shape)
    for r in range(rows):
        ids = tokens[r].astype(np.int64)
        L = lens[ids]
        if L.sum() == 0:
            continue
        B = mat[ids][np.arange(maxlen)[None, :] < L[:, None]]            # the row's bytes
        is_start = (B & 0xC0) != 0x80
        start_idx = np.maximum.accumulate(np.where(is_start, np.arange(len(B)), 0))
        lead = B[start_idx]
        in_script = np.isin(lead, list(leads))
        space = B == 0x20
        good = in_script | space
        bl = np.where(space, _SPACE_LOGP, np.where(is_start, -math.log(n_lead), -math.log(n_block / n_lead)))
        seg = np.repeat(np.arange(n_ctx), L)
        n_good = np.bincount(seg, weights=good, minlength=n_ctx)
        n_scr = np.bincount(seg, weights=in_script, minlength=n_ctx)
        ok[r] = (L > 0) & (n_good == L) & (n_scr > 0)
        lp[r] = np.bincount(seg, weights=bl, minlength=n_ctx)
    return ok, lp


def proxy_masks(index: ActivationIndex, tokenizer, names=LLR_PROXIES, labels: bool = True) -> dict[str, np.ndarray]:
    """{proxy name: bool [rows, n_ctx]} for the LLR proxies (llr > 0) and every domain/subdomain label."""
    tb = token_bytes(tokenizer)
    lpu = unigram_logp(index.tokens, len(tb))
    out = {n: proxy_llr(index.tokens, tb, n, lpu) > 0 for n in names}
    if labels:
        for j, n in enumerate(index.domain_names):
            out[f"domain:{n}"] = index.domain == j
        for j, n in enumerate(index.subdomain_names):
            out[f"subdomain:{n}"] = index.subdomain == j
    return out


# ---------------------------------------------------------------- scoring
def _unit_sums(index: ActivationIndex, kind: str, y: np.ndarray, block: int = 4_000_000):
    """Per unit: sum a, sum a^2, sum a*y, count(a>0 & y), from the sparse store in blocks."""
    u = index._u(kind)
    n = len(u.count)
    yf = y.reshape(-1)
    out = np.zeros((4, n))
    u0 = 0
    while u0 < n:
        u1 = int(np.searchsorted(u.indptr, u.indptr[u0] + block, side="right")) - 1
        u1 = min(n, max(u0 + 1, u1))
        a, b = int(u.indptr[u0]), int(u.indptr[u1])
        val = np.asarray(u.val[a:b], np.float64)
        yy = yf[np.asarray(u.pos[a:b])]
        unit = np.repeat(np.arange(u1 - u0), u.count[u0:u1])
        m = u1 - u0
        out[0, u0:u1] = np.bincount(unit, weights=val, minlength=m)
        out[1, u0:u1] = np.bincount(unit, weights=val * val, minlength=m)
        out[2, u0:u1] = np.bincount(unit, weights=val * yy, minlength=m)
        out[3, u0:u1] = np.bincount(unit, weights=yy, minlength=m)
        u0 = u1
    return out


def _label_sums(index: ActivationIndex, kind: str, label: str | None):
    """Stored per-unit sums for a ``domain:x`` / ``subdomain:x`` proxy (no pass over the data), or None."""
    u = index._u(kind)
    if label is None or u.sum is None or u.domain_sums is None or ":" not in label:
        return None
    level, name = label.split(":", 1)
    names = {"domain": index.domain_names, "subdomain": index.subdomain_names}.get(level)
    if names is None or name not in names:
        return None
    j = names.index(name)
    sums = (u.domain_sums if level == "domain" else u.subdomain_sums)[:, j]
    counts = (u.domain_counts if level == "domain" else u.subdomain_counts)[:, j]
    return np.stack([u.sum, u.sumsq, sums, counts])


def pearson_all(index: ActivationIndex, kind: str, y: np.ndarray, label: str | None = None) -> np.ndarray:
    """Pearson correlation of every unit's activation with the binary proxy ``y`` (0 where undefined).

    ``label`` (``"domain:code"``, ``"subdomain:dna"``) uses the sums stored in the index instead of a pass.
    """
    N = index.n_tokens
    stats = _label_sums(index, kind, label)
    s_a, s_aa, s_ay, _ = stats if stats is not None else _unit_sums(index, kind, y)
    p = float(y.mean())
    mean_a = s_a / N
    cov = s_ay / N - mean_a * p
    var_a = s_aa / N - mean_a ** 2
    den = np.sqrt(np.maximum(var_a, 0) * p * (1 - p))
    return np.where(den > 0, cov / np.where(den > 0, den, 1), 0.0)


def score_unit(index: ActivationIndex, kind: str, unit: int, y: np.ndarray) -> dict:
    """Specificity and sensitivity of "on" (> 0), AUROC, Pearson, and the best-F1 operating point."""
    pos, val = index.unit_entries(kind, unit)
    yf = np.asarray(y, bool).reshape(-1)
    a = np.zeros(yf.size, np.float32)
    a[pos] = val
    on = a > 0
    both = int((on & yf).sum())
    op = operating_point(pos, val, yf)
    return {"kind": kind, "unit": int(unit), "specificity": both / max(1, int(on.sum())),
            "sensitivity": both / max(1, int(yf.sum())), "auroc": auroc(a, yf),
            "pearson": float(np.corrcoef(a, yf)[0, 1]) if a.std() > 0 and 0 < yf.mean() < 1 else 0.0,
            "unit_density": float(on.mean()), "best_f1": op["f1"], "threshold": op["threshold"],
            "specificity_at_t": op["precision"], "sensitivity_at_t": op["recall"],
            "average_precision": op["average_precision"]}


def best_units(index: ActivationIndex, y: np.ndarray, kinds=("feature", "neuron"), live_only: bool = True,
               label: str | None = None, candidates: int = 10) -> dict:
    """For each kind, the unit that detects ``y`` best and its scores.

    "Best" is the highest F1 at the unit's own best threshold, among the ``candidates`` units
    best correlated with ``y`` (Pearson, from the index's sums; scoring every unit's thresholds
    would read every activation of 512 dense neurons once per proxy).
    """
    out = {}
    yf = np.asarray(y, bool).reshape(-1)
    for kind in kinds:
        if kind not in index.units:
            continue
        r = pearson_all(index, kind, y, label)
        if live_only:
            mask = np.zeros(len(r), bool)
            mask[index.live_units(kind)] = True
            r = np.where(mask, r, -np.inf)
        order = np.argsort(-r, kind="stable")[:max(1, candidates)]
        f1 = [operating_point(*index.unit_entries(kind, int(u)), yf)["f1"] if np.isfinite(r[u]) else -1.0
              for u in order]
        out[kind] = score_unit(index, kind, int(order[int(np.argmax(f1))]), y)   # the best Pearson on ties
    return out


def proxy_table(index: ActivationIndex, tokenizer, masks: dict | None = None, min_tokens: int = 10,
                progress: bool = True):
    """A DataFrame: per proxy, the best feature and best neuron (``best_units``) and their scores (``score_unit``)."""
    masks = masks if masks is not None else proxy_masks(index, tokenizer)
    rows = []
    for name, y in tqdm(masks.items(), desc="proxies", disable=not progress):
        n = int(y.sum())
        if n < min_tokens or n == y.size:
            continue
        best = best_units(index, y, label=name if name.startswith(("domain:", "subdomain:")) else None)
        # both units at the same coverage: the feature's own when "on" (> 0)
        match = best["feature"]["sensitivity"] if "feature" in best else None
        for kind, s in best.items():
            s["specificity_at_feature_sensitivity"] = float("nan") if match is None else \
                precision_at_recall(*index.unit_entries(kind, s["unit"]), y.reshape(-1), match)
            rows.append({"proxy": name, "proxy_tokens": n, "proxy_share": n / y.size, **s})
    return pd.DataFrame(rows)


WIN_METRICS = {  # the table's measures, as a reader would name them
    "specificity_at_feature_sensitivity": "specificity at the feature's coverage",
    "best_f1": "F1, each at its best threshold",
    "average_precision": "average precision",
    "specificity_at_t": "specificity at the best-F1 threshold",
    "specificity": "specificity when on (> 0)",
    "sensitivity": "sensitivity when on (> 0)",
    "auroc": "AUROC",
    "pearson": "Pearson with the proxy",
}


def compare(table) -> "object":
    """Feature vs neuron side by side per proxy; ``feature_wins``: the feature's best F1 is higher."""
    wide = table.pivot(index="proxy", columns="kind", values=["unit", *WIN_METRICS])
    wide.columns = [f"{m}_{k}" for m, k in wide.columns]
    wide = wide.astype({c: "Int64" for c in wide.columns if c.startswith("unit_")})
    if "best_f1_feature" in wide and "best_f1_neuron" in wide:
        wide["feature_wins"] = wide["best_f1_feature"] > wide["best_f1_neuron"]
    return wide


def win_counts(table) -> dict:
    """``{measure: "k/n"}``: on how many of the n proxies the best feature beats the best neuron
    (measures as in ``WIN_METRICS``, whose values name them for a reader)."""
    wide = table.pivot(index="proxy", columns="kind", values=list(WIN_METRICS))
    if "feature" not in wide.columns.get_level_values(1) or "neuron" not in wide.columns.get_level_values(1):
        return {}
    return {m: f"{int((wide[(m, 'feature')] > wide[(m, 'neuron')]).sum())}/{len(wide)}" for m in WIN_METRICS}


def table_metrics(table) -> dict:
    """The table as JSON-able metrics (for ``store.update_metrics``)."""
    out = {}
    for r in table.to_dict("records"):
        out.setdefault(r["proxy"], {})[r["kind"]] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                                     for k, v in r.items() if k not in ("proxy", "kind")}
    wins = win_counts(table)
    return {"proxies": out, "proxies_feature_wins": wins.get("best_f1", "0/0"), "proxies_feature_wins_by_metric": wins}


def save_proxy_metrics(table, folders, store=None) -> None:
    """Merge the table into each artifact folder's metrics.json (the SAE's, the index's). A folder the
    caller may not write (a shared, read-only store) keeps the builder's record: the table is returned
    all the same, so a student's notebook does not fail on a record it only reads."""
    s = store or ArtifactStore()
    m = table_metrics(table)
    for f in folders:
        if f is not None:
            try:
                s.update_metrics(f, **m)
            except PermissionError:
                pass
            except OSError as e:
                if e.errno != errno.EROFS:
                    raise


# ---------------------------------------------------------------- cached table (notebook 02, the build)
PROXY_RESULT_VERSION = 2   # 2: best unit by best-F1 threshold; F1, average precision


def tokenizer_bytes_id(tokenizer) -> str:
    """A content hash of the tokenizer's token bytes: the only thing the proxies read from it."""
    h = hashlib.sha256()
    for b in token_bytes(tokenizer):
        h.update(len(b).to_bytes(4, "little") + b)
    return h.hexdigest()[:16]


def cached_proxy_table(index: ActivationIndex, tokenizer, store=None, *, min_tokens: int = 10,
                       names=LLR_PROXIES, progress: bool = True, force: bool = False):
    """``(table, masks)`` as ``proxy_table`` and ``proxy_masks`` give them, computed once per index.

    The table and the LLR masks are kept as a result artifact keyed by the index's folder (its
    name holds the hash of the model and SAE it was built from) and the tokenizer's bytes; the
    label masks are rebuilt from the index (a comparison per label).
    """
    names = tuple(names)
    config = {"index": input_id(index), "tokenizer": tokenizer_bytes_id(tokenizer), "proxies": list(names),
              "min_tokens": int(min_tokens), "version": PROXY_RESULT_VERSION}
    box = {}

    def compute():
        masks = proxy_masks(index, tokenizer, names)
        box["masks"] = masks
        table = proxy_table(index, tokenizer, masks, min_tokens=min_tokens, progress=progress)
        return {f"mask.{n}": masks[n] for n in names}, {"table": frame_to_json(table)}

    arrays, meta = cached_result("proxies", config, compute, store, force=force)
    if "masks" in box:
        masks = box["masks"]
    else:
        masks = {n: arrays[f"mask.{n}"] for n in names}
        masks.update((k, v) for k, v in proxy_masks(index, tokenizer, names=(), labels=True).items())
    return frame_from_json(meta["table"]), masks


PROXY_DICTIONARIES = ("main", "paper2023", "topk")


def get_proxy_table(preset=None, store=None, *, index: ActivationIndex | None = None, tokenizer=None,
                    dictionary: str = "main", progress: bool = True):
    """``(table, masks)`` of model A's index, saved into the SAE's and the index's metrics.json.

    ``dictionary``: ``"main"`` for A/1 (the preset's recipe, ``preset.sae_recipe``), ``"paper2023"``
    for the paper's recipe at A/1's width and tokens (``indexes.get_paper_index``; A/1 itself on
    ``paper``), ``"topk"`` for notebook 01's TopK SAE (``indexes.get_topk_index``). The build stages
    and notebook 02 call this; pass the ``index`` and ``tokenizer`` already loaded to skip loading
    them again. Needs: tokenizer, model A, the SAE and its index (built if missing).
    """
    p, s = resolve(preset, store)
    if dictionary not in PROXY_DICTIONARIES:
        raise ValueError(f"unknown dictionary {dictionary!r}: choose one of {PROXY_DICTIONARIES} "
                         f"('main' is A/1, of the preset's recipe {p.sae_recipe!r})")
    if index is None:
        index = {"main": get_index, "paper2023": get_paper_index,
                 "topk": get_topk_index}[dictionary](p, which="A", store=s, progress=progress)
    if tokenizer is None:
        tokenizer = get_tokenizer(p, s)
    table, masks = cached_proxy_table(index, tokenizer, s, progress=progress)
    save_proxy_metrics(table, [getattr(index, "sae_folder", None), index.folder], s)
    return table, masks


def win_table(tables: dict):
    """One row per SAE (``{name: proxy table}``), one column per measure: on how many proxies its
    best feature beats the best neuron ("k/n"), as in ``win_counts``."""
    rows = {name: {WIN_METRICS[m]: v for m, v in win_counts(t).items()} for name, t in tables.items()}
    return pd.DataFrame.from_dict(rows, orient="index")
