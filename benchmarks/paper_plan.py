"""How each build stage's cost grows with tokens and with features, measured at two or three scales.

    python benchmarks/paper_plan.py            # every probe, each in a fresh process (peak memory is its own)
    python benchmarks/paper_plan.py --quick    # the smaller scales only

Each probe times one stage's inner computation on synthetic inputs of the paper's shapes
(d_mlp 512, SAE widths up to 131,072, sparse activations at a trained SAE's L0) at several
scales, reports seconds and peak resident memory per scale, and the growth exponent between
the scales (time ~ scale^k: k = 1 is linear). The projection of the paper preset
(/work/notes/README-21.md, then the README) multiplies these by the paper's sizes and uses
benchmarks/RESULTS.md's H200 figures for what runs on the GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

L0 = 32          # active features per token, about a trained SAE's (paper: tens)
D_IN = 512       # the paper's MLP width


def _sparse_acts(n_tokens: int, n_units: int, l0: int = L0, seed: int = 0):
    """[tokens, units] CSR with ``l0`` active units per token, unit popularity Zipf-like (as SAE
    feature densities spread over decades)."""
    import numpy as np
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_units + 1) ** 0.8
    p /= p.sum()
    perm = rng.permutation(n_units)
    cols = perm[rng.choice(n_units, size=(n_tokens, l0), p=p)]
    cols.sort(1)
    vals = rng.exponential(1.0, (n_tokens, l0)).astype(np.float32)
    m = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, n_tokens * l0 + 1, l0)), shape=(n_tokens, n_units))
    m.sum_duplicates()
    return m


# ---------------------------------------------------------------- probes: one scale each, in a fresh process
def probe_sae_step(width: int) -> dict:
    """One ReLU SAE training step (the CPU trainer's kernels), batch 256: cost ~ batch x width."""
    import torch
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    from mono_utils.core.sae_kernels import sae_grads
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=width))
    x = torch.randn(256, D_IN)
    sae_grads(sae, x, l1_coeff=3e-3)
    t = time.perf_counter()
    for _ in range(3):
        sae_grads(sae, x, l1_coeff=3e-3)
    return {"seconds": (time.perf_counter() - t) / 3, "unit": "s/step (batch 256)"}


def probe_eval_encode(width: int) -> dict:
    """The evaluation's density pass (encoder only) over 4,064 tokens, in EVAL_MAX_CELLS slices."""
    import torch
    from mono_utils.core.metrics import _fire_counts, _sae_rows
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=width)).eval()
    x = torch.randn(32 * 127, D_IN)
    t = time.perf_counter()
    with torch.no_grad():
        step = _sae_rows(width, len(x))
        for r in range(0, len(x), step):
            _fire_counts(sae, x[r:r + step])
    return {"seconds": time.perf_counter() - t, "unit": "s per 4,064 tokens"}


def probe_links(large: int, tokens: int = 32768) -> dict:
    """Feature splitting's links between sizes large/2 and large on ``tokens`` tokens."""
    from mono_utils.splitting.family import link_activations
    acts = {large // 2: _sparse_acts(tokens, large // 2, seed=1), large: _sparse_acts(tokens, large, seed=2)}
    t = time.perf_counter()
    g = link_activations(acts)
    return {"seconds": time.perf_counter() - t, "links": int(g.links[0].nnz), "unit": f"s ({tokens} tokens)"}


def probe_links_tokens(tokens: int, large: int = 16384) -> dict:
    r = probe_links(large, tokens)
    r["unit"] = f"s (sizes {large // 2}, {large})"
    return r


def probe_umap(n: int) -> dict:
    """UMAP (cosine, one thread, the family's settings) of ``n`` unit directions in 512 dimensions."""
    import numpy as np
    from mono_utils.splitting.family import umap_layout
    rng = np.random.default_rng(0)
    # directions in clusters (as decoder directions of a family are), not uniform noise
    centres = rng.normal(size=(max(8, n // 64), D_IN))
    d = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, D_IN))
    d = d.astype(np.float32)
    umap_layout({1: d[:150], 2: d[150:300]})          # numba compiles on the first call: not timed
    t = time.perf_counter()
    umap_layout({1: d[: n // 3], 2: d[n // 3:]})       # two "sizes" (a family needs two)
    return {"seconds": time.perf_counter() - t, "unit": f"s ({n} directions)"}


def probe_index(tokens: int, units: int = 4096) -> dict:
    """The activation index's accumulation of ``tokens`` x ``units`` sparse activations (8,192-token chunks)."""
    import torch
    from mono_utils.core.index import SparseAccumulator
    acts = _sparse_acts(tokens, units, seed=3)
    acc = SparseAccumulator(units, tokens)
    t = time.perf_counter()
    for s0 in range(0, tokens, 8192):
        acc.add(s0, torch.from_numpy(acts[s0:s0 + 8192].toarray()))
    acc.finish()
    return {"seconds": time.perf_counter() - t, "unit": f"s ({units} units)"}


def probe_universality(tokens: int, units: int = 4096) -> dict:
    """Notebook 04's feature x feature correlations (A/1 against B/1) over ``tokens`` tokens."""
    from mono_utils.universality.compare import CorrelationStats
    a, b = _sparse_acts(tokens, units, seed=4), _sparse_acts(tokens, units, seed=5)
    t = time.perf_counter()
    st = CorrelationStats(units, units)
    for s0 in range(0, tokens, 16384):
        st.update(a[s0:s0 + 16384], b[s0:s0 + 16384])
    st.correlation().max(1)
    return {"seconds": time.perf_counter() - t, "unit": f"s ({units} x {units})"}


PROBES = {
    # name: (function, scales, what grows, quick scales)
    "SAE training step": (probe_sae_step, (4096, 16384, 65536), "features", (4096, 16384)),
    "evaluation, encoder pass": (probe_eval_encode, (4096, 16384, 131072), "features", (4096, 16384)),
    "splitting links, by width": (probe_links, (16384, 65536, 131072), "features", (4096, 16384)),
    "splitting links, by tokens": (probe_links_tokens, (16384, 65536), "tokens", (8192, 16384)),
    "activation index": (probe_index, (16384, 65536, 131072), "tokens", (8192, 16384)),
    "universality correlations": (probe_universality, (16384, 65536), "tokens", (8192, 16384)),
    "family UMAP": (probe_umap, (4000, 12000, 32000), "directions", (2000, 4000)),
}


def _worker(name: str, scale: int) -> None:
    out = PROBES[name][0](scale)
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smaller scales only")
    ap.add_argument("--only", nargs="*", help="probes whose name contains one of these words")
    ap.add_argument("--worker", nargs=2, metavar=("PROBE", "SCALE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker[0], int(args.worker[1]))
        return 0
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (figures scale with the load; "
          f"exponents are ratios within one run)\n")
    print("| probe | grows with | scale | seconds | peak MB | exponent k (time ~ scale^k) |\n|---|---|---:|---:|---:|---:|")
    for name, (_, scales, what, quick) in PROBES.items():
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        prev = None
        for scale in (quick if args.quick else scales):
            r = subprocess.run([sys.executable, __file__, "--worker", name, str(scale)], cwd=ROOT,
                               capture_output=True, text=True)
            if r.returncode:
                print(f"| {name} | {what} | {scale} | FAILED | | |\n{r.stderr[-2000:]}")
                break
            res = json.loads(r.stdout.strip().splitlines()[-1])
            k = "" if prev is None else f"{math.log(res['seconds'] / prev[1]) / math.log(scale / prev[0]):.2f}"
            extra = f" ({res['links']} links)" if "links" in res else ""
            print(f"| {name} | {what} | {scale:,} | {res['seconds']:.2f} {res['unit']}{extra} | {res['peak_mb']:.0f} | {k} |",
                  flush=True)
            prev = (scale, res["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
