"""Byte-level BPE tokenizer trained on the corpus (HF ``tokenizers``), saved with save_pretrained."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..store.artifacts import removed_message

EOT = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train a byte-level BPE with ``<|endoftext|>`` as BOS/EOS/pad and save it to ``out_dir``."""
    if vocab_size < 300:
        raise ValueError(f"vocab_size {vocab_size} is too small for byte-level BPE (needs >= 300: 256 bytes + merges)")
    from tokenizers import (  # lazy: only to train or load a tokenizer
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast  # lazy: heavy: only for a pretrained model

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT,
                                   pad_token=EOT, unk_token=None)
    fast.save_pretrained(str(out_dir))
    return load_tokenizer(out_dir)


def load_tokenizer(folder: str | Path):
    """Load with AutoTokenizer (the form TransformerLens accepts), offline."""
    from transformers import AutoTokenizer  # lazy: heavy: only for a pretrained model
    folder = Path(folder)
    if not (folder / "tokenizer.json").exists():
        if not folder.exists() and folder.parent.name == "tokenizer":   # a store artifact that was there
            raise FileNotFoundError(removed_message(folder))
        raise FileNotFoundError(f"{folder} holds no tokenizer.json: build the tokenizer first "
                                f"(mono_utils.pipeline.get_tokenizer)")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - tokenizers/transformers raise many kinds of errors on bad files
        if not (folder / "tokenizer.json").exists():   # gone mid-read: transformers then takes it for a hub repo id
            raise FileNotFoundError(removed_message(folder)) from None
        raise ValueError(f"{folder / 'tokenizer.json'} is damaged or not a tokenizer ({type(e).__name__}: "
                         f"{str(e)[:200]}): delete the tokenizer's artifact folder and rebuild it") from None
    if len(tok) <= 1 or not tok("a b", add_special_tokens=False)["input_ids"]:
        raise ValueError(f"{folder / 'tokenizer.json'} has an empty vocabulary ({len(tok)} entries; it would "
                         f"encode every text to []): the file is damaged; delete the tokenizer's artifact "
                         f"folder and rebuild it")
    return tok


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def str_tokens(tokenizer, ids) -> list[str]:
    """Each id as the text it stands for (bytes that are not whole characters show as \\ufffd)."""
    return [tokenizer.decode([int(i)], clean_up_tokenization_spaces=False) for i in ids]


def pack_documents(docs, tokenizer, n_ctx: int, labels: list[str] | None = None):
    """Concatenate documents (separated by ``<|endoftext|>``) into rows of ``n_ctx`` tokens.

    Every row starts with the BOS token, as TransformerLens models expect. Returns
    ``tokens`` [rows, n_ctx] (uint16), per-token ``domain`` and ``subdomain`` label ids
    [rows, n_ctx] (uint8), the label names, and the token count of each document.
    """
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be >= 2, got {n_ctx}")
    bos = tokenizer.convert_tokens_to_ids(EOT)
    domains = sorted({d.domain for d in docs})
    subdomains = sorted({d.subdomain for d in docs})
    dom_id = {d: i for i, d in enumerate(domains)}
    sub_id = {s: i for i, s in enumerate(subdomains)}
    ids, dom, sub, counts = [], [], [], []
    batch = 256
    for start in range(0, len(docs), batch):
        chunk = docs[start:start + batch]
        encoded = tokenizer([d.text for d in chunk], add_special_tokens=False)["input_ids"]
        for d, e in zip(chunk, encoded):
            counts.append(len(e))
            ids.extend(e)
            ids.append(bos)
            dom.extend([dom_id[d.domain]] * (len(e) + 1))
            sub.extend([sub_id[d.subdomain]] * (len(e) + 1))
    body = n_ctx - 1
    rows = len(ids) // body
    if rows == 0:
        raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one context of {n_ctx}: "
                         f"give it more text")
    arr = np.asarray(ids[: rows * body], dtype=np.int64).reshape(rows, body)
    tokens = np.concatenate([np.full((rows, 1), bos), arr], axis=1).astype(np.uint16)
    def lab(x):
        a = np.asarray(x[: rows * body], dtype=np.uint8).reshape(rows, body)
        return np.concatenate([a[:, :1], a], axis=1)
    return tokens, lab(dom), lab(sub), domains, subdomains, counts
