"""The SAE training step with hand-written gradients (no autograd), for speed.

A dense ReLU step needs five GEMMs, not autograd's six: the gradient of the pre-encoder bias
through ``x - b_dec`` is ``-(sum_b dpre_b) @ W_enc^T``, a matrix-vector product. The L1 term
is folded into the decoder-backward GEMM (``addmm`` with a constant bias) and the ReLU mask
into one ``threshold_backward`` pass.

Once the features are sparse (TopK always; ReLU when few features fire), only the encoder
GEMM stays dense: decoding, the feature gradients (a sampled matmul at the active entries)
and the two weight gradients (sparse-transposed times dense) touch only the active latents.

``sae_grads`` fills ``.grad`` of the four parameters and returns batch statistics. The
gradients equal autograd's on ``SparseAutoencoder.loss`` (tests check this).

The 2024 recipes reuse both paths: ``anthropic2024``'s penalty lambda f_i ||W_dec,i|| adds
lambda ||W_dec,i|| / B to each feature's gradient (where the paper adds lambda / B) and
lambda (sum_b f_bi) W_dec,i / (B ||W_dec,i||) to the decoder's; without a pre-encoder bias the
encoder sees ``x`` itself. BatchTopK keeps the k*B largest activations of the batch and takes
the sparse path with no penalty (plus AuxK, as TopK). A Matryoshka BatchTopK SAE
(``cfg.matryoshka_prefixes``) takes it too, through ``_nested_pass``: one sparse product per
gradient for all its prefixes together.
"""
from __future__ import annotations

import warnings

import torch

warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
warnings.filterwarnings("ignore", message=".*Sparse invariant checks.*")


def _mm(a: torch.Tensor, b: torch.Tensor, bf16: bool, bias: torch.Tensor | None = None) -> torch.Tensor:
    if bf16:
        out = a.bfloat16() @ b.bfloat16()
        out = out.float()
        return out.add_(bias) if bias is not None else out
    return torch.addmm(bias, a, b) if bias is not None else a @ b


def sae_grads(sae, xs: torch.Tensor, *, l1_coeff: float | None = None, dead_mask: torch.Tensor | None = None,
              sparse: bool | None = None, bf16: bool = False) -> dict:
    """Gradients of the loss on *scaled* inputs ``xs`` [B, d_in] into the parameters' ``.grad``.

    ``sparse``: force the sparse (True) or dense (False) path; None picks dense for the ReLU SAE
    (the trainer switches once features are sparse) and sparse for TopK.
    """
    cfg = sae.cfg
    B, d = xs.shape
    W_enc, b_enc, W_dec, b_dec = sae.W_enc.detach(), sae.b_enc.detach(), sae.W_dec.detach(), sae.b_dec.detach()
    lam = cfg.l1_coeff if l1_coeff is None else l1_coeff
    pre_bias = getattr(cfg, "pre_encoder_bias", True)
    xc = xs - b_dec if pre_bias else xs
    pre = _mm(xc, W_enc, bf16, b_enc)                                   # GEMM 1 [B, m]
    scale = 2.0 / (B * d)
    dec_norm = W_dec.norm(dim=1) if getattr(cfg, "penalty", "l1") == "l1_decoder_norm" else None
    if cfg.architecture == "relu" and not sparse:
        f = pre.relu_()
        x_hat = _mm(f, W_dec, bf16, b_dec)                               # GEMM 2
        err = x_hat.sub_(xs)
        sq = torch.dot(err.view(-1), err.view(-1))
        d_xhat = err.mul_(scale)
        fsum = f.sum(0)
        dW_dec = _mm(f.t(), d_xhat, bf16)                                # GEMM 3
        if dec_norm is None:
            lam_vec = torch.full((cfg.d_sae,), lam / B, dtype=xs.dtype, device=xs.device)
        else:
            lam_vec = dec_norm * (lam / B)
            dW_dec.add_(W_dec * (fsum * (lam / B) / dec_norm.clamp_min(1e-12))[:, None])
        df = _mm(d_xhat, W_dec.t(), bf16, lam_vec)                       # GEMM 4 (+ L1 gradient)
        dpre = torch.ops.aten.threshold_backward(df, f, 0.0)
        db_enc = dpre.sum(0)
        dW_enc = _mm(xc.t(), dpre, bf16)                                 # GEMM 5
        nnz = torch.count_nonzero(f)
        stats = {"sq": sq, "l1": (fsum.sum() if dec_norm is None else fsum @ dec_norm) / B, "nnz": nnz,
                 "fired": fsum > 0}
    else:
        if cfg.architecture == "relu":
            S = pre.relu_().to_sparse_csr()
            crow, col, v = S.crow_indices(), S.col_indices(), S.values()
        elif cfg.architecture == "batchtopk":
            crow, col, v, min_kept = _batch_topk(sae, pre.relu_(), cfg.k, B)
        else:
            vals, idx = pre.topk(cfg.k, dim=1)
            idx, order = idx.sort(dim=1)
            v = vals.gather(1, order).relu_().reshape(-1)
            col = idx.reshape(-1)
            crow = torch.arange(0, B * cfg.k + 1, cfg.k, device=xs.device)
        pen = (lam if dec_norm is None else lam * dec_norm[col.to(torch.int64)]) if cfg.architecture == "relu" \
            else 0.0
        if getattr(cfg, "matryoshka_prefixes", ()):   # the mean of the prefixes' losses (BatchTopK: no pen)
            x_hat, dW_dec, dW_encT, db_enc, d_xhat, sq, prefix_sq = _nested_pass(
                crow, col, v, xs, xc, W_dec, b_dec, cfg.matryoshka_prefixes, scale, B)
        else:
            x_hat, dW_dec, dW_encT, db_enc, d_xhat, sq = _sparse_pass(
                crow, col, v, xs, xc, W_dec, b_dec, pen, scale, B)
            prefix_sq = None
        active = v > 0
        fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=xs.device)
        fired[col[active]] = True
        if dec_norm is not None and cfg.architecture == "relu":
            fsum = torch.zeros(cfg.d_sae, dtype=v.dtype, device=v.device).index_add_(0, col.to(torch.int64), v)
            dW_dec.add_(W_dec * (fsum * (lam / B) / dec_norm.clamp_min(1e-12))[:, None])
            stats = {"sq": sq, "l1": (fsum @ dec_norm) / B, "nnz": active.sum(), "fired": fired}
        else:
            stats = {"sq": sq, "l1": v.sum() / B, "nnz": active.sum(), "fired": fired}
        if cfg.architecture == "batchtopk":
            stats["min_kept"] = min_kept
        if prefix_sq is not None:
            stats["prefix_mse"] = prefix_sq / (B * d)
            stats["recon"] = stats["prefix_mse"].mean()   # the training loss's reconstruction part
        if cfg.architecture in ("topk", "batchtopk") and dead_mask is not None and bool(dead_mask.any()):
            aux = _auxk(sae, pre, dead_mask, xs, xc, x_hat, W_dec, B, d)
            dW_dec += aux[0]
            dW_encT += aux[1]
            db_enc += aux[2]
            stats["aux"] = aux[3]
        dW_enc = dW_encT.t()
    db_dec = d_xhat.sum(0) - W_enc @ db_enc if pre_bias else d_xhat.sum(0)
    for p, g in ((sae.W_enc, dW_enc), (sae.b_enc, db_enc), (sae.W_dec, dW_dec), (sae.b_dec, db_dec)):
        p.grad = g.contiguous()
    stats["mse"] = stats["sq"] / (B * d)
    return stats


def _batch_topk(sae, f, k: int, B: int):
    """CSR (crow, col, values) of the k*B largest entries of ``f`` [B, m] (>= 0), and the smallest
    kept positive value. Exact, but fast: it first keeps the entries above 0.8 x the previous
    batch's smallest kept value (``sae._batchtopk_hint``, not saved), and takes the top k*B of
    those when there are enough of them; else of all entries."""
    m = f.shape[1]
    flat = f.view(-1)
    kb = min(flat.numel(), k * B)
    hint = getattr(sae, "_batchtopk_hint", None)
    idx = None
    if hint is not None and hint > 0:
        cand = (flat > 0.8 * hint).nonzero().view(-1)
        if len(cand) >= kb:   # then every entry of the top k*B lies above the cut: exact
            idx = cand[flat[cand].topk(kb, sorted=False).indices]
    if idx is None:
        idx = flat.topk(kb, sorted=False).indices
    idx = idx.sort().values
    v = flat[idx]
    pos = v[v > 0]
    min_kept = pos.min() if len(pos) else None
    sae._batchtopk_hint = float(min_kept) if min_kept is not None else None
    col = idx % m
    crow = torch.zeros(B + 1, dtype=torch.int64, device=f.device)
    crow[1:] = torch.bincount(idx // m, minlength=B).cumsum(0)
    return crow, col, v, min_kept


def _csr(crow, col, v, shape):
    return torch.sparse_csr_tensor(crow, col, v, shape, check_invariants=False)


def _transpose_pattern(crow, col, B, m):
    """CSR pattern of the transpose [m, B]: (crow_T, col_T, order) with values v[order]."""
    counts = crow[1:] - crow[:-1]
    rows = torch.repeat_interleave(torch.arange(B, device=col.device), counts)
    order = torch.argsort(col, stable=True)
    crow_t = torch.zeros(m + 1, dtype=crow.dtype, device=col.device)
    crow_t[1:] = torch.bincount(col, minlength=m).cumsum(0)
    return crow_t, rows[order].to(crow.dtype), order


def column_sums(vals, col, crow_t, order, m: int, in_order: bool = False) -> torch.Tensor:
    """Per-column sums of CSR values ``vals`` (columns ``col``), [m].

    ``in_order``: one segment sum per column over the transposed pattern, in a fixed order.
    A GPU needs it: there ``index_add_`` adds with atomics in no fixed order, so two runs of
    the same config would differ in the last bits. On a CPU both ways add in row order.
    """
    if in_order:
        return torch.segment_reduce(vals[order], "sum", offsets=crow_t)
    return torch.zeros(m, dtype=vals.dtype, device=vals.device).index_add_(0, col, vals)


def _sparse_pass(crow, col, v, target, xc, W_dec, b_dec, lam, scale, B, with_bias=True):
    """Sparse decode + backward. Returns x_hat, dW_dec, dW_enc^T, db_enc, d_xhat, sum sq err."""
    m = W_dec.shape[0]
    crow, col = crow.to(torch.int64), col.to(torch.int64)
    S = _csr(crow, col, v, (B, m))
    x_hat = torch.sparse.mm(S, W_dec)
    if with_bias:
        x_hat += b_dec
    err = x_hat - target
    sq = torch.dot(err.view(-1), err.view(-1))
    d_xhat = err.mul_(scale)
    pattern = _csr(crow, col, torch.zeros_like(v), (B, m))
    dv = torch.sparse.sampled_addmm(pattern, d_xhat, W_dec.t(), beta=0.0).values()
    if torch.is_tensor(lam) or lam:   # a number (paper) or one value per entry (decoder-norm penalty)
        dv = dv + lam / B
    dpre = dv * (v > 0)
    crow_t, col_t, order = _transpose_pattern(crow, col, B, m)
    db_enc = column_sums(dpre, col, crow_t, order, m, in_order=v.is_cuda)
    dW_dec = torch.sparse.mm(_csr(crow_t, col_t, v[order], (m, B)), d_xhat)
    dW_encT = torch.sparse.mm(_csr(crow_t, col_t, dpre[order], (m, B)), xc)
    return x_hat, dW_dec, dW_encT, db_enc, d_xhat, sq


def _nested_pass(crow, col, v, xs, xc, W_dec, b_dec, prefixes, scale, B):
    """``_sparse_pass`` of a Matryoshka SAE: the loss is the mean over the P prefixes m of the MSE of
    x_hat_m = f[:, :m] @ W_dec[:m] + b_dec. A feature of group g (prefixes[g-1] <= i < prefixes[g])
    is in every reconstruction from the g-th on, so its gradients read G_g = sum_{p >= g} dL/dx_hat_p.
    Each entry (b, i) goes to row g*B + b of a stacked [P*B, m] matrix: one sparse product gives every
    group's part of the reconstruction, one each the feature and decoder gradients.

    Returns ``_sparse_pass``'s tuple for the whole dictionary (x_hat: the full reconstruction, for
    AuxK; d_xhat: the gradient that reaches b_dec, G_0; sq: the full reconstruction's squared error)
    and the squared error of each prefix's reconstruction, [P]."""
    m, d = W_dec.shape
    P = len(prefixes)
    crow, col = crow.to(torch.int64), col.to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(B, device=col.device), crow[1:] - crow[:-1])
    group = torch.bucketize(col, torch.tensor(prefixes[:-1], dtype=torch.int64, device=col.device), right=True)
    stacked = group * B + rows
    order = torch.argsort(stacked, stable=True)          # row-major in the stack; columns stay sorted in a row
    s_col, s_v = col[order], v[order]
    s_crow = torch.zeros(P * B + 1, dtype=torch.int64, device=col.device)
    s_crow[1:] = torch.bincount(stacked, minlength=P * B).cumsum(0)
    parts = torch.sparse.mm(_csr(s_crow, s_col, s_v, (P * B, m)), W_dec).view(P, B, d)   # each group's share
    err = parts.cumsum(0).add_(b_dec).sub_(xs)            # [P, B, d]: prefix p's x_hat - x
    x_hat = err[-1] + xs
    prefix_sq = err.pow(2).sum((1, 2))
    G = err.mul_(scale / P).flip(0).cumsum(0).flip(0)    # G[g] = sum_{p >= g} dL/dx_hat_p
    G2 = G.reshape(P * B, d)
    pattern = _csr(s_crow, s_col, torch.zeros_like(s_v), (P * B, m))
    dv = torch.empty_like(v)
    dv[order] = torch.sparse.sampled_addmm(pattern, G2, W_dec.t(), beta=0.0).values()
    dpre = dv * (v > 0)
    crow_t, col_t, order_t = _transpose_pattern(crow, col, B, m)
    db_enc = column_sums(dpre, col, crow_t, order_t, m, in_order=v.is_cuda)
    s_crow_t, s_col_t, s_order_t = _transpose_pattern(s_crow, s_col, P * B, m)
    dW_dec = torch.sparse.mm(_csr(s_crow_t, s_col_t, s_v[s_order_t], (m, P * B)), G2)
    dW_encT = torch.sparse.mm(_csr(crow_t, col_t, dpre[order_t], (m, B)), xc)
    return x_hat, dW_dec, dW_encT, db_enc, G[0], prefix_sq[-1], prefix_sq


def _auxk(sae, pre, dead_mask, xs, xc, x_hat, W_dec, B, d):
    """AuxK (Gao et al. 2024): the top aux_k dead latents reconstruct the residual x - x_hat."""
    cfg = sae.cfg
    dead = dead_mask.nonzero()[:, 0]
    kk = min(cfg.aux_k_eff, len(dead))
    av, ai = pre[:, dead].topk(kk, dim=1)
    ai, order = ai.sort(dim=1)
    av = av.gather(1, order).relu_().reshape(-1)
    col = dead[ai.reshape(-1)]
    crow = torch.arange(0, B * kk + 1, kk, device=xs.device)
    residual = xs - x_hat  # x - x_hat (x_hat holds no gradient here)
    _, dW_dec, dW_encT, db_enc, _, sq = _sparse_pass(
        crow, col, av, residual, xc, W_dec, None, 0.0, cfg.aux_coeff * 2.0 / (B * d), B, with_bias=False)
    return dW_dec, dW_encT, db_enc, sq / (B * d)
