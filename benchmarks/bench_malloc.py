"""Training steps with and without the build's glibc malloc tuning, interleaved in one run.

``python -m mono_utils build --jobs N`` starts its workers with ``MALLOC_MMAP_MAX_=0`` and a
huge ``MALLOC_TRIM_THRESHOLD_`` (``mono_utils.core.malloc_tuning``): big tensors come
from the heap instead of fresh mmaps, so a step stops faulting its memory in again. This script
times a model training step (default shape, batch 32 x 128) and an SAE step (512 -> 4096,
batch 512, the dense step of early training) in child processes with and without the tuning, alternating, one
thread each, and prints median step times, page faults per step and the ratios.

Usage: .venv/bin/python benchmarks/bench_malloc.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
what = sys.argv[1]
if what == "model":
    from mono_utils.core.model import ModelConfig, build_model
    model = build_model(ModelConfig(d_vocab=4096)); model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, 4096, (32, 128), generator=torch.Generator().manual_seed(0))
    def step():
        loss = model(batch, return_type="loss"); opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    n = 8
else:
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    from mono_utils.core.sae_kernels import sae_grads
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=512, d_sae=4096, seed=0))
    f = torch.zeros(512, 4096)
    f.scatter_(1, torch.randint(0, 4096, (512, 26), generator=g), torch.rand(512, 26, generator=g))
    xs = (f @ sae.W_dec + sae.b_dec).detach()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    def step():
        sae_grads(sae, xs, sparse=False); sae.remove_parallel_grad(); opt.step(); sae.normalize_decoder()
    n = 40
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ts = []
for _ in range(n):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n
print(json.dumps({"median_ms": 1000 * sorted(ts)[n // 2], "faults": faults}))
"""


def run(what: str, tuned: bool) -> dict:
    from mono_utils.core.malloc_tuning import MALLOC_TUNING
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MONO_MALLOC_TUNING"] = "1" if tuned else "0"     # the run-time mallopt of the training code too
    env.update(OMP_NUM_THREADS="1", **(MALLOC_TUNING if tuned else {}))
    out = subprocess.run([sys.executable, "-c", CHILD, what], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.2f}; 1 thread per child; median of {args.rounds} alternating rounds\n")
    print("| step | glibc default: ms (page faults) | tuned: ms (page faults) | speed-up |\n|---|---:|---:|---:|")
    for what in ("model", "sae"):
        plain, tuned = [], []
        for _ in range(args.rounds):
            plain.append(run(what, False))
            tuned.append(run(what, True))
        p = statistics.median(r["median_ms"] for r in plain)
        t = statistics.median(r["median_ms"] for r in tuned)
        pf = statistics.median(r["faults"] for r in plain)
        tf = statistics.median(r["faults"] for r in tuned)
        print(f"| {what} | {p:.1f} ({pf:.0f}) | {t:.1f} ({tf:.0f}) | {p / t:.2f}x |")


if __name__ == "__main__":
    main()
