import numpy as np
import pytest

from mono_utils.core import corpus as data
from mono_utils.core import tokenizer as tk


def test_round_trip_and_specials(smoke_tokenizer):
    tok = smoke_tokenizer
    for text in ["def f(x):\n    return x**2", "שלום مرحبا Привет 你好 ✓ 🎉", "ACGTACGT", "  spaces\t\ttabs\n\n"]:
        assert tk.decode(tok, tk.encode(tok, text)) == text
    assert tok.bos_token == tok.eos_token == tok.pad_token == tk.EOT
    assert len(tok) <= 1024


def test_pack_documents_labels(smoke_tokenizer):
    docs = [data.Document("hello world " * 20, "english", "readme", "t"),
            data.Document("ACGT" * 40, "generated", "dna", "t")]
    tokens, dom, sub, dnames, snames, counts = tk.pack_documents(docs, smoke_tokenizer, 16)
    bos = smoke_tokenizer.convert_tokens_to_ids(tk.EOT)
    assert tokens.shape[1] == 16 and (tokens[:, 0] == bos).all()
    assert dom.shape == tokens.shape and set(np.unique(dom)) <= {0, 1}
    assert dnames == ["english", "generated"] and len(counts) == 2


def test_tiny_vocab_rejected(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        tk.train_tokenizer(["abc"], 100, tmp_path)


def test_too_little_text(smoke_tokenizer):
    with pytest.raises(ValueError, match="fewer than one context"):
        tk.pack_documents([data.Document("hi", "english", "x", "t")], smoke_tokenizer, 128)
