"""Tokens and text as people read them (``core.tokenizer.readable_*``): a letter that byte-level BPE
splits across tokens shows whole, a stray byte as ‹xx›, never "�" (the atlas's decodeRun; the browser
test checks the two agree byte for byte)."""
import pytest

from mono_utils.core.tokenizer import decode, decode_run, encode, readable_text, readable_tokens, train_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    # 300 = 256 bytes + a few merges: Hebrew and Greek letters stay split into their two bytes
    return train_tokenizer(["hello world, the cat sat"] * 50, 300, tmp_path_factory.mktemp("tok"))


def test_split_letters_show_whole_and_stray_bytes_as_hex(tok):
    ids = encode(tok, "שלום α")
    assert len(ids) > len("שלום α")                         # the letters really are split
    assert "\ufffd" in "".join(decode(tok, [i]) for i in ids)   # what each token alone decodes to
    shown = readable_tokens(tok, ids)
    assert "".join(shown) == "שלום α" == readable_text(tok, ids) == decode(tok, ids)
    assert shown[0] == "ש" and shown[1] == ""                 # the letter on the token with its first byte
    assert readable_text(tok, ids[:-1]) == "שלום \u2039ce\u203a"  # the text cut inside α
    assert readable_tokens(tok, ids[1:2]) == ["\u2039a9\u203a"]    # a lone continuation byte
    assert readable_text(tok, encode(tok, "the cat")) == "the cat"


def test_decode_run_never_replaces_a_byte():
    assert decode_run([b"\xff", b"a"]) == ["\u2039ff\u203a", "a"]
    assert decode_run(["🦄".encode()[:2], "🦄".encode()[2:]]) == ["🦄", ""]
    assert decode_run([b"\xed\xa0\x80"]) == ["\u2039ed\u203a\u2039a0\u203a\u2039" "80\u203a"]   # a surrogate is no character
    assert decode_run([]) == [] and decode_run([b""]) == [""]
