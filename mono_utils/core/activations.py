"""MLP activations for SAE training: streamed, shuffled across many contexts, bounded memory.

The stream is cut into *blocks* of ``block_size`` activations. Block ``b`` is a pure function
of ``(seed, b)``: it takes the next ``block_size / tokens_per_context`` context rows of a
seeded permutation of the token rows (a fresh permutation each pass over the data), keeps
``tokens_per_context`` random positions of each (the paper samples 250 tokens per context),
runs the model only up to the MLP (``mono_utils.model.mlp_post``) and shuffles the block.
``batch(step)`` serves consecutive slices of consecutive blocks, so a batch mixes hundreds
of contexts, memory holds one block whatever the run length, and a resumed run sees exactly
the batches an uninterrupted run would.

With ``cache=path`` every block is also written to an fp16 memory-mapped ``.npy`` the first
time it is computed and read back from it afterwards, so a family of SAEs trained on the same
stream harvests the model once.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..store.artifacts import atomic_write_json, read_json
from .model import mlp_post
from .sae import check_activations


class TensorSource:
    """Batches from an in-memory [N, d] tensor (tests, planted data); reshuffled every epoch."""

    def __init__(self, acts: torch.Tensor, batch_size: int, seed: int = 0):
        if acts.ndim != 2 or len(acts) < batch_size:
            raise ValueError(f"TensorSource needs [N, d] with N >= batch_size {batch_size}, got {tuple(acts.shape)}")
        self.acts, self.batch_size, self.seed = acts.float(), batch_size, seed
        self.d_in = acts.shape[1]
        self.per_epoch = len(acts) // batch_size
        self._perm_epoch, self._perm = -1, None

    def batch(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.acts), generator=g), epoch
        return self.acts[self._perm[i * self.batch_size:(i + 1) * self.batch_size]]

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return self.acts[torch.randint(0, len(self.acts), (n,), generator=g)]




class ActivationStream:
    """Shuffled MLP activations of ``model`` on token rows ``tokens`` [rows, n_ctx]."""

    def __init__(self, model, tokens: np.ndarray, batch_size: int, *, seed: int = 0,
                 tokens_per_context: int | None = None, block_size: int = 1 << 17,
                 skip_bos: bool = True, cache: str | Path | None = None, max_tokens: int | None = None,
                 model_batch: int = 64, device: str | torch.device = "cpu"):
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [rows, n_ctx], got shape {tokens.shape}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model, self.tokens, self.batch_size, self.seed = model, tokens, batch_size, seed
        n_ctx = tokens.shape[1]
        self.first = 1 if skip_bos else 0  # row position 0 is always BOS: one constant activation
        avail = n_ctx - self.first
        self.tpc = min(avail, tokens_per_context or avail)
        self.d_in = int(model.cfg.d_mlp)
        block = max(batch_size, (block_size // batch_size) * batch_size)
        self.rows_per_block = max(1, block // self.tpc)
        self.block_size = (self.rows_per_block * self.tpc // batch_size) * batch_size
        if self.block_size == 0:
            self.rows_per_block = -(-batch_size // self.tpc)
            self.block_size = batch_size
        self.model_batch, self.device = model_batch, device
        self._block_id, self._block = -1, None
        self.cache = _Cache(Path(cache), self, max_tokens) if cache is not None else None

    # ------------------------------------------------------------ deterministic blocks
    def _rows_of_block(self, b: int) -> np.ndarray:
        n = len(self.tokens)
        start = b * self.rows_per_block
        out = []
        while len(out) < self.rows_per_block:
            epoch, off = divmod(start, n)
            perm = np.random.default_rng([self.seed, 17, epoch]).permutation(n)
            take = perm[off: off + self.rows_per_block - len(out)]
            out.extend(take.tolist())
            start += len(take)
        return np.asarray(out)

    @torch.no_grad()
    def compute_block(self, b: int) -> torch.Tensor:
        rows = self._rows_of_block(b)
        rng = np.random.default_rng([self.seed, 29, b])
        n_ctx = self.tokens.shape[1]
        chunks = []
        for s in range(0, len(rows), self.model_batch):
            r = rows[s:s + self.model_batch]
            tok = torch.from_numpy(self.tokens[r].astype(np.int64)).to(self.device)
            acts = mlp_post(self.model, tok).float()  # [rows, n_ctx, d]
            if self.tpc == n_ctx - self.first:
                chunks.append(acts[:, self.first:].reshape(-1, acts.shape[-1]).cpu())
            else:
                pos = np.stack([rng.choice(np.arange(self.first, n_ctx), self.tpc, replace=False)
                                for _ in range(len(r))])
                pos_t = torch.from_numpy(pos).to(acts.device)
                chunks.append(acts.gather(1, pos_t[..., None].expand(-1, -1, acts.shape[-1]))
                              .reshape(-1, acts.shape[-1]).cpu())
        block = torch.cat(chunks)
        check_activations(block, self.d_in, f"MLP activations of block {b}")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        return block[torch.randperm(len(block), generator=g)[: self.block_size]].contiguous()

    def block(self, b: int) -> torch.Tensor:
        if b != self._block_id:
            self._block = self.cache.block(b) if self.cache is not None else self.compute_block(b)
            self._block_id = b
        return self._block

    def batch(self, step: int) -> torch.Tensor:
        start = step * self.batch_size
        b, off = divmod(start, self.block_size)
        return self.block(b)[off: off + self.batch_size]

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` activations from block 0 (used for initialisation statistics)."""
        blk = self.block(0)
        g = torch.Generator().manual_seed(seed)
        return blk[torch.randint(0, len(blk), (n,), generator=g)]


class _Cache:
    """fp16 memmap of the stream's blocks, filled lazily; ``meta.json`` records which are done."""

    def __init__(self, path: Path, stream: ActivationStream, max_tokens: int | None):
        self.path, self.stream = path, stream
        path.mkdir(parents=True, exist_ok=True)
        n_blocks = -(-(max_tokens or stream.block_size) // stream.block_size)
        self.n_blocks = n_blocks
        key = {"d_in": stream.d_in, "block_size": stream.block_size, "seed": stream.seed, "tpc": stream.tpc,
               "rows": len(stream.tokens), "first": stream.first, "n_blocks": n_blocks,
               "tokens_sum": int(stream.tokens[:64].astype(np.int64).sum())}
        meta_path = path / "meta.json"
        meta = read_json(meta_path) if meta_path.exists() else None
        if meta is None or meta.get("key") != key:
            meta = {"key": key, "done": []}
            np.lib.format.open_memmap(path / "acts.npy", mode="w+", dtype=np.float16,
                                      shape=(n_blocks * stream.block_size, stream.d_in)).flush()
            atomic_write_json(meta_path, meta)
        self.meta, self.meta_path = meta, meta_path
        self._write = atomic_write_json

    def block(self, b: int) -> torch.Tensor:
        if b >= self.n_blocks:  # beyond the cached length: compute, don't store
            return self.stream.compute_block(b)
        bs = self.stream.block_size
        mm = np.load(self.path / "acts.npy", mmap_mode="r+")
        if b in self.meta["done"]:
            return torch.from_numpy(np.asarray(mm[b * bs:(b + 1) * bs], dtype=np.float32))
        blk = self.stream.compute_block(b)
        if blk.abs().max() > 60000:
            raise ValueError("activations exceed the fp16 range; train without the fp16 cache (cache=None)")
        mm[b * bs:(b + 1) * bs] = blk.numpy().astype(np.float16)
        mm.flush()
        self.meta["done"] = sorted(set(self.meta["done"]) | {b})
        self._write(self.meta_path, self.meta)
        return blk.half().float()  # the same values a later run reads back


def stream_info(stream: ActivationStream) -> str:
    return json.dumps({"block_size": stream.block_size, "tokens_per_context": stream.tpc,
                       "contexts_per_block": stream.rows_per_block})
