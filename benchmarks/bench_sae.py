"""SAE training speed vs the machine's own six-GEMM bound (a benchmark, not a test).

    python benchmarks/bench_sae.py [--steps 6] [--bf16] [--sizes 2048,4096] [--batch 4096] [--l0 30]

For each width it times, in this process: the six fp32 GEMMs of a dense SAE step (encoder and
decoder forward, their four backward products) -> the best act/s a dense step could reach;
then full training steps (gradients, Adam, decoder-norm constraint) of
- ``autograd``: a plain PyTorch loop (autograd on SparseAutoencoder.loss), for reference;
- ``relu dense``: our five-GEMM ReLU step (early training, when many features fire);
- ``relu sparse``: our ReLU step once features are sparse (L0 ~ ``--l0``, as at the end of training);
- ``topk``: TopK (k = ``--l0``) with the sparse decoder/backward;
- ``2024 dense`` / ``2024 sparse``: the anthropic2024 recipe's step (decoder-norm-weighted L1,
  no pre-encoder bias, free decoder norms, gradient clipping at 1), dense and at L0 ~ ``--l0``;
- ``batchtopk``: BatchTopK (k = ``--l0`` per token on average over the batch), sparse path
  (the default preset's A/1: k 18, batch 512);
and prints act/s and the ratio to the six-GEMM bound. The bound and the variants are timed in
interleaved rounds and each figure is the best round (robust to other load on the machine).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mono_utils.core.sae import RECIPES, SAEConfig, SparseAutoencoder  # noqa: E402
from mono_utils.core.sae_kernels import sae_grads  # noqa: E402


def timeit(fn, steps, warmup=2, sync=lambda: None):
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def six_gemm_time(B, d, m, steps, dev, sync):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, d, generator=g).to(dev)
    We, Wd = torch.randn(d, m, generator=g).to(dev), torch.randn(m, d, generator=g).to(dev)
    f, dx = torch.randn(B, m, generator=g).to(dev), torch.randn(B, d, generator=g).to(dev)

    def six():
        x @ We
        f @ Wd
        f.t() @ dx
        dx @ Wd.t()
        x.t() @ f
        f @ We.t()
    return timeit(six, steps, sync=sync)


def make(arch, B, d, m, dev, sparse_l0=None, k=32):
    recipe = arch if arch in RECIPES else None
    fields = dict(RECIPES[recipe]["sae"]) if recipe else {"architecture": arch}
    fields.pop("decoder_init_norm", None)   # 2024: unit rows, as they are soon in training (not 0.1)
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=m, k=k, l1_coeff=5e-3, **fields)).to(dev)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(B, d, generator=g).relu() * 2).to(dev)
    if sparse_l0 is not None:  # a bias that leaves ~sparse_l0 features active per token
        with torch.no_grad():
            pre = sae.pre_acts(x)
            sae.b_enc -= torch.quantile(pre[:512].flatten().float().cpu(), 1 - sparse_l0 / m).to(dev)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, **({"fused": True} if dev.type in ("cpu", "cuda") else {}))
    return sae, opt, x


def step_fast(sae, opt, x, sparse, bf16):
    sae_grads(sae, x, sparse=sparse, bf16=bf16)
    if sae.cfg.unit_decoder:
        sae.remove_parallel_grad()
    else:   # the 2024 recipe: no decoder constraint, gradient norm clipped at 1 (as the trainer)
        torch.nn.utils.clip_grad_norm_(list(sae.parameters()), 1.0, foreach=True)
    opt.step()
    if sae.cfg.unit_decoder:
        sae.normalize_decoder()


def step_autograd(sae, opt, x):
    opt.zero_grad(set_to_none=True)
    sae.loss(x)["loss"].backward()
    sae.remove_parallel_grad()
    opt.step()
    sae.normalize_decoder()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--sizes", default="2048,4096")
    ap.add_argument("--bf16", action="store_true", help="also time bf16 matmuls (fast only with AMX or a GPU)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--l0", type=int, default=32, help="k of the TopK variants and the L0 of the sparse ReLU steps")
    a = ap.parse_args()
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 bound, fp32 steps
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    B, d = a.batch, a.d_in
    print(f"# bench_sae: {platform.processor() or platform.machine()} | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()} | device {dev} | batch {B}")
    print(f"{'width':>12} {'variant':>14} {'act/s':>10} {'ratio to 6-GEMM bound':>22}")
    for m in [int(s) for s in a.sizes.split(",")]:
        k = a.l0
        variants = [("autograd", "relu", None, None), ("relu dense", "relu", False, None),
                    ("relu sparse", "relu", True, k), (f"topk k={k}", "topk", True, None),
                    ("2024 dense", "anthropic2024", False, None), ("2024 sparse", "anthropic2024", True, k),
                    (f"batchtopk k={k}", "batchtopk", True, None)]
        if a.bf16:
            variants += [("relu dense bf16", "relu", "bf16", None), ("topk bf16", "topk", "bf16", None)]
        fns, extras = {}, {}
        for name, arch, sparse, l0 in variants:
            sae, opt, x = make(arch, B, d, m, dev, l0, k)
            if name == "autograd":
                fns[name] = (lambda sae=sae, opt=opt, x=x: step_autograd(sae, opt, x))
            else:
                bf16 = sparse == "bf16"
                sp = (arch == "topk") if bf16 else sparse
                fns[name] = (lambda sae=sae, opt=opt, x=x, sp=sp, bf16=bf16: step_fast(sae, opt, x, sp, bf16))
            if l0 is not None or arch == "topk":   # (BatchTopK encodes with its threshold, untrained here)
                extras[name] = (sae, x)
        best = {name: float("inf") for name in ["six"] + list(fns)}
        for _ in range(a.steps):  # interleaved rounds; keep each one's best
            best["six"] = min(best["six"], six_gemm_time(B, d, m, 1, dev, sync))
            for name, fn in fns.items():
                best[name] = min(best[name], timeit(fn, 1, warmup=1, sync=sync))
        bound = B / best["six"]
        gflops = 6 * 2 * B * d * m / best["six"] / 1e9
        print(f"{d}->{m:<7} {'6-GEMM bound':>14} {bound:10.0f} {1.0:22.2f}   ({gflops:.0f} GFLOP/s fp32)")
        for name in fns:
            extra = ""
            if name in extras:
                sae, x = extras[name]
                extra = f"   (L0 {float((sae.encode(x) > 0).sum(-1).float().mean()):.0f})"
            print(f"{d}->{m:<7} {name:>14} {B / best[name]:10.0f} {B / best[name] / bound:22.2f}{extra}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
