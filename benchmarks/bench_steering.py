"""How long a steering-slider move takes on the default preset's shape (2 CPU threads).

    .venv/bin/python benchmarks/bench_steering.py [--moves 20] [--trained]

Builds a model of the default preset's shape (1 layer, d_model 128, d_mlp 512, vocab 4096,
n_ctx 128) and a 4096-feature SAE, random unless --trained finds the default artifacts
already built, then times: one slider move in the widget (40 new tokens, baseline cached,
HTML and bar chart redrawn), the fast generation alone, and the TransformerLens-hooks backend.
Timing does not depend on training; the numbers go to stdout as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def stdlib_text(n_bytes: int) -> list[str]:
    import sysconfig
    out, total = [], 0
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        t = p.read_text(encoding="utf-8", errors="ignore")
        out.append(t)
        total += len(t)
        if total > n_bytes:
            break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trained", action="store_true")
    a = ap.parse_args()
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    from mono_utils.core.model import ModelConfig, build_model
    from mono_utils.pipeline.presets import get_preset
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    from mono_utils.steering.interventions import Intervention, generate
    from mono_utils.steering.catalog import feature_catalog
    from mono_utils.steering.widget import SteeringWidget
    from mono_utils.core.tokenizer import EOT, train_tokenizer
    p = get_preset("default")
    model = sae = tok = None
    if a.trained:
        from mono_utils.pipeline import models as pipeline
        from mono_utils.pipeline.saes import get_sae
        model, tok = pipeline.get_model(p, which="A"), pipeline.get_tokenizer(p)
        sae = get_sae(p, which="A")
    if model is None:
        tok = train_tokenizer(stdlib_text(3_000_000), p.vocab_size, tempfile.mkdtemp())
        model = build_model(ModelConfig(d_vocab=len(tok), d_model=p.d_model, n_heads=p.n_heads,
                                        d_mlp=p.d_mlp, n_ctx=p.n_ctx), tokenizer=tok)
        sae = SparseAutoencoder(SAEConfig(d_in=p.d_mlp, d_sae=p.sae_main, seed=0))
    rng = np.random.default_rng(0)
    toks = rng.integers(1, len(tok), size=(16, p.n_ctx)).astype(np.uint16)
    toks[:, 0] = tok.convert_tokens_to_ids(EOT)
    cat = feature_catalog(model, sae, toks, np.zeros_like(toks, dtype=np.uint8), ["all"], tok, progress=False)
    feat = int(cat.search("")[0])
    w = SteeringWidget(model, tok, sae, cat, features=[feat], debounce_s=0)
    assert w.length.value == 40
    mx = float(cat.max_act[feat])
    times = []
    for i in range(a.moves):
        t = time.perf_counter()
        w.set_value(feat, mx * (1 + 0.1 * i))
        times.append((time.perf_counter() - t) * 1000)
    gen = []
    for i in range(5):
        t = time.perf_counter()
        generate(model, tok, sae, "1,2,3,4,5,6,7,8,9,10", [Intervention(feat, "clamp", mx * 2)],
                 max_new_tokens=40, seed=i, fast=w.fast)
        gen.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    generate(model, tok, sae, "1,2,3,4,5,6,7,8,9,10", [Intervention(feat, "clamp", mx * 2)],
             max_new_tokens=40, backend="hooks")
    hooks_ms = (time.perf_counter() - t) * 1000
    times.sort()
    res = {"threads": a.threads, "trained": bool(a.trained), "moves": a.moves, "new_tokens": 40,
           "slider_move_ms_median": round(statistics.median(times), 1),
           "slider_move_ms_p90": round(times[int(0.9 * (len(times) - 1))], 1),
           "slider_move_ms_max": round(times[-1], 1),
           "fast_generate_40_ms_median": round(statistics.median(gen), 1),
           "hooks_backend_generate_40_ms": round(hooks_ms, 1),
           "target_ms": 500}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
