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
                                f"(mono_utils.pipeline.models.get_tokenizer)")
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


# ---------------------------------------------------------------- tokens as people read them
_CHAR_TO_BYTE: dict[str, int] | None = None


def _char_to_byte() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2's bytes_to_unicode), inverted: token character -> raw byte."""
    global _CHAR_TO_BYTE
    if _CHAR_TO_BYTE is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _CHAR_TO_BYTE = {chr(c): b for b, c in zip(bs, cs)}
    return _CHAR_TO_BYTE


def token_bytes_of(tokenizer, ids) -> list[bytes]:
    """The raw bytes of each token (a partial UTF-8 character included); a token outside the byte
    alphabet (a special token, a stand-in tokenizer's) as its text's UTF-8."""
    ids = [int(i) for i in ids]
    table = _char_to_byte()
    conv = getattr(tokenizer, "convert_ids_to_tokens", None)
    names = conv(ids) if conv is not None else [None] * len(ids)
    return [bytes(table[c] for c in t) if isinstance(t, str) and t and all(c in table for c in t)
            else tokenizer.decode([i], clean_up_tokenization_spaces=False).encode("utf-8")
            for i, t in zip(ids, names)]


def decode_run(pieces: list[bytes]) -> list[str]:
    """A run of tokens' bytes as each token's text, the way the atlas shows them (``decodeRun`` in
    atlas/assets/atlas.js): byte-level BPE splits a Hebrew, Arabic or Greek letter across tokens, so the
    run is decoded together, each character goes to the token that holds its first byte, and a byte
    that starts no whole character shows as its hex code, ``‹d7›``, never as "�"."""
    data = b"".join(pieces)
    owner = [k for k, p in enumerate(pieces) for _ in p]
    out = [""] * len(pieces)
    i = 0
    while i < len(data):
        b0 = data[i]
        n = 1 if b0 < 0x80 else 2 if b0 >> 5 == 6 else 3 if b0 >> 4 == 14 else 4 if b0 >> 3 == 30 else 0
        try:
            if not n or i + n > len(data):
                raise UnicodeDecodeError("utf-8", data, i, i + 1, "no whole character starts here")
            out[owner[i]] += data[i:i + n].decode("utf-8")
            i += n
        except UnicodeDecodeError:
            out[owner[i]] += f"‹{b0:02x}›"
            i += 1
    return out


def readable_tokens(tokenizer, ids) -> list[str]:
    """The tokens ``ids`` (a run of text) as :func:`decode_run` shows them."""
    return decode_run(token_bytes_of(tokenizer, ids))


def readable_text(tokenizer, ids) -> str:
    """``decode`` for people: the same text where the bytes are whole characters, a stray byte (a
    continuation cut off at the end, a sequence a sampled model got wrong) as ``‹xx›``, not "�"."""
    return "".join(readable_tokens(tokenizer, ids))


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


def readable_each(tokenizer, ids) -> list[str]:
    """Each id alone as ``decode_run`` shows it (not as a run): whole characters as text, a byte that
    starts no whole character as ``‹d7›``, so no two split bytes read alike and no page shows "�"."""
    return [decode_run([b])[0] for b in token_bytes_of(tokenizer, ids)]
