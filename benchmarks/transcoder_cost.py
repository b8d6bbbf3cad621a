"""What the transcoder stage costs on a preset's shapes, without building the preset.

A model of the preset's shapes (random weights: the cost of a step does not depend on them; BatchTopK
keeps k per token whatever the weights) and random token rows; times, on the threads given:

- harvesting (MLP input, MLP output) pairs: one block of ``PairStream``;
- training steps of the transcoder at the preset's width, k, batch and lr (``--steps`` of them);
- the evaluation: ``evaluate_transcoder`` on a slice of the evaluation and density tokens;

in CPU seconds of this process (``time.process_time``), so that other work on a shared machine
does not inflate them; with one thread that is the wall time of an idle machine.

and scales each to the preset's budgets (``transcoder_tokens``, ``eval_tokens``, ``density_tokens``).

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transcoder_cost.py [--preset default] [--steps 150]
"""
from __future__ import annotations

import argparse
import time


def main() -> int:
    import numpy as np
    import torch

    from mono_utils.core.model import ModelConfig, build_model
    from mono_utils.core.transcoder import PairStream, evaluate_transcoder, train_transcoder
    from mono_utils.pipeline.presets import get_preset
    from mono_utils.pipeline.saes import STREAM_KW
    from mono_utils.pipeline.transcoders import transcoder_artifact_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-rows", type=int, default=64)
    args = ap.parse_args()
    p = get_preset(args.preset)
    cfg, tc_full, _, _ = transcoder_artifact_config(p)
    model = build_model(ModelConfig(d_vocab=p.vocab_size, d_model=p.d_model, n_heads=p.n_heads, d_mlp=p.d_mlp,
                                    n_ctx=p.n_ctx, seed=0)).eval()
    tokens = np.random.default_rng(0).integers(0, p.vocab_size, size=(4096, p.n_ctx)).astype(np.uint16)
    threads = torch.get_num_threads()

    stream = PairStream(model, tokens, tc_full.batch_size, seed=0, **STREAM_KW)
    t0 = time.process_time()
    stream.block(0)
    harvest_per_tok = (time.process_time() - t0) / stream.block_size

    tc = type(tc_full)(**{**tc_full.to_dict(), "total_tokens": args.steps * tc_full.batch_size,
                          "resample_fracs": tuple(tc_full.resample_fracs)})
    steps_in_block = stream.block_size // tc.batch_size
    if args.steps > steps_in_block:
        raise SystemExit(f"--steps {args.steps} exceeds one block ({steps_in_block} steps): lower it")
    t0 = time.process_time()
    train_transcoder(cfg, stream, tc, progress=False)
    step_s = (time.process_time() - t0) / args.steps   # block 0 is already harvested: steps only

    rows = args.eval_rows
    trc, _ = train_transcoder(cfg, stream, type(tc)(**{**tc.to_dict(), "total_tokens": tc.batch_size,
                                                        "resample_fracs": tuple(tc.resample_fracs)}), progress=False)
    t0 = time.process_time()
    evaluate_transcoder(trc, model, tokens[:rows], rows * p.n_ctx, rows * p.n_ctx)
    eval_per_tok = (time.process_time() - t0) / (rows * p.n_ctx)
    t0 = time.process_time()
    evaluate_transcoder(trc, model, tokens[rows:3 * rows], rows * p.n_ctx, 2 * rows * p.n_ctx)
    dens_per_tok = max(0.0, time.process_time() - t0 - eval_per_tok * rows * p.n_ctx) / (rows * p.n_ctx)

    n_tok = tc_full.steps * tc_full.batch_size
    harvest = harvest_per_tok * n_tok
    train = step_s * tc_full.steps
    # the evaluation's ablation baselines are A/1's (cached in the store, computed once per model):
    # timed here too, so the estimate is an upper bound
    evaluation = eval_per_tok * p.eval_tokens + dens_per_tok * max(0, p.density_tokens - p.eval_tokens)
    total = harvest + train + evaluation
    print(f"preset {p.name}: transcoder {cfg.d_in}->{cfg.d_sae}->{cfg.d_out}, k {cfg.k}, skip {cfg.skip}, "
          f"batch {tc_full.batch_size}, {n_tok:,} training activations; {threads} thread(s)")
    print(f"  harvest   {harvest_per_tok * 1e6:8.2f} us/token -> {harvest:7.1f} s")
    print(f"  train     {step_s * 1e3:8.2f} ms/step  -> {train:7.1f} s ({tc_full.steps} steps)")
    print(f"  evaluate  {eval_per_tok * 1e6:8.2f} us/token (+{dens_per_tok * 1e6:.2f} density) -> {evaluation:7.1f} s")
    print(f"  total     {total:7.1f} s = {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
