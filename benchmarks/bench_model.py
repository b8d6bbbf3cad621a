"""Model training tokens/s and MLP-activation harvest tokens/s on the default shape.

Prints figures measured in this process on this machine (random weights and tokens: speed
does not depend on what the model has learned).
Usage: .venv/bin/python benchmarks/bench_model.py [--steps 20]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from mono_utils.core.model import HOOK_MLP_POST, ModelConfig, TrainConfig, build_model, mlp_post, train_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    cfg = ModelConfig(d_vocab=4096)
    model = build_model(cfg)
    import numpy as np
    rows = np.random.default_rng(0).integers(0, 4096, size=(4096, cfg.n_ctx)).astype(np.uint16)

    # training: warm up 3 steps, then time
    tcfg = TrainConfig(tokens=args.batch * cfg.n_ctx * 3, batch_size=args.batch)
    train_model(model, rows, tcfg, progress=False)
    tcfg = TrainConfig(tokens=args.batch * cfg.n_ctx * args.steps, batch_size=args.batch)
    t = time.perf_counter()
    train_model(model, rows, tcfg, progress=False)
    train_tps = args.batch * cfg.n_ctx * args.steps / (time.perf_counter() - t)

    # harvesting: forward stopped after the MLP, batches of 128 contexts
    # (three warm-up calls, then the median of three rounds of 16 batches: one round is noisy)
    x = torch.from_numpy(rows[:128].astype("int64"))
    for _ in range(3):
        mlp_post(model, x)
    rounds = []
    for _ in range(3):
        n = 0
        t = time.perf_counter()
        for s in range(0, 2048, 128):
            mlp_post(model, torch.from_numpy(rows[s:s + 128].astype("int64")))
            n += 128 * cfg.n_ctx
        rounds.append(n / (time.perf_counter() - t))
    harvest_tps = sorted(rounds)[1]

    # the slow way, for comparison: run_with_cache over the whole model
    t = time.perf_counter()
    m = 0
    with torch.no_grad():
        for s in range(0, 1024, 128):
            _, cache = model.run_with_cache(torch.from_numpy(rows[s:s + 128].astype("int64")),
                                            names_filter=lambda name: name == HOOK_MLP_POST)
            m += 128 * cfg.n_ctx
    cache_tps = m / (time.perf_counter() - t)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"model training      : {train_tps:10,.0f} tokens/s  (batch {args.batch}x{cfg.n_ctx}, AdamW, fp32)")
    print(f"activation harvest  : {harvest_tps:10,.0f} tokens/s  (forward stopped after the MLP; median of "
          f"3 rounds: {', '.join(f'{r:,.0f}' for r in rounds)})")
    print(f"run_with_cache      : {cache_tps:10,.0f} tokens/s  (full forward, for comparison: x{harvest_tps / cache_tps:.1f})")


if __name__ == "__main__":
    main()
