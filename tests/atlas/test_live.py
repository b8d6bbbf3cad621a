"""The live atlas (mono_utils.atlas.live): model A and its SAEs as ONNX equal torch's numbers on
held-out text, and the page's JavaScript tokenizer gives the Python tokenizer's ids."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from mono_utils.atlas import live
from mono_utils.core.model import mlp_post
from mono_utils.core.tokenizer import decode, encode
from mono_utils.pipeline.saes import get_paper_sae, get_sae

ATOL = 1e-4


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _need_js():
    """Skip locally (fail in CI) when node or the pinned libraries are missing."""
    problems = []
    if shutil.which("node") is None:
        problems.append("node is not installed (apt-get install -y nodejs npm)")
    try:
        live.check_libraries()
    except FileNotFoundError as e:
        problems.append(str(e))
    if problems:
        msg = "; ".join(problems)
        if _ci():
            pytest.fail(msg + " -- CI=true, so this is an error, not a skip", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def held_out(smoke_tokens):
    """Held-out rows (never trained on), as int64 [rows, n_ctx]."""
    return smoke_tokens.val[:6].astype(np.int64)


def test_split_model_and_onnx_match_the_bridge(smoke_model, held_out):
    """back(front(tokens)) in onnxruntime = the TransformerLens bridge (in torch, and its own ONNX export):
    logits and hook_post within 1e-4."""
    assert live.check_split(smoke_model, torch.from_numpy(held_out[:2])) < ATOL
    graphs = live.export_model(smoke_model)
    bridge = live.ort_session(live.export_bridge(smoke_model))     # the bridge's own ONNX export, whole
    worst_logit = worst_act = worst_bridge = 0.0
    for row in held_out:
        for n in (row.size, 17, 1):          # the token axis is dynamic: full context, a prefix, one token
            tok = row[None, :n]
            logits, act = live.run_model_onnx(graphs, tok)
            with torch.no_grad():
                ref_logits = smoke_model(torch.from_numpy(tok)).float().numpy()
                ref_act = mlp_post(smoke_model, torch.from_numpy(tok)).numpy()
            assert logits.shape == ref_logits.shape and act.shape == ref_act.shape
            worst_logit = max(worst_logit, float(np.abs(logits - ref_logits).max()))
            worst_act = max(worst_act, float(np.abs(act - ref_act).max()))
            (whole,) = bridge.run(None, {"tokens": tok})
            worst_bridge = max(worst_bridge, float(np.abs(logits - whole).max()))
    assert worst_logit <= ATOL and worst_act <= ATOL and worst_bridge <= ATOL, (worst_logit, worst_act, worst_bridge)


@pytest.mark.parametrize("which", ["A/1", "paper2023"])
def test_sae_onnx_matches_torch(smoke_preset, smoke_store, smoke_model, held_out, which):
    """encode and decode of A/1 (BatchTopK: a JumpReLU threshold) and the paper's recipe (ReLU) equal
    torch's within 1e-4 on held-out activations; ``dirs`` of a one-hot is exactly the dictionary row."""
    sae = (get_sae(smoke_preset, smoke_store, which="A", progress=False) if which == "A/1"
           else get_paper_sae(smoke_preset, smoke_store, which="A", progress=False))
    g = live.export_sae(sae)
    enc, dec = live.ort_session(g["encode"]), live.ort_session(g["decode"])
    with torch.no_grad():
        x = mlp_post(smoke_model, torch.from_numpy(held_out)).reshape(-1, sae.cfg.d_in)
        f_ref = sae.encode(x)
        (f,) = enc.run(None, {"x": x.numpy()})
        assert float(np.abs(f - f_ref.numpy()).max()) <= ATOL
        assert ((f > 0) == (f_ref.numpy() > 0)).mean() > 0.999      # the same features fire
        assert (f > 0).any(), "no feature fires: the test would prove nothing"
        x_hat, dirs = dec.run(None, {"f": f_ref.numpy()})
        assert float(np.abs(x_hat - sae.decode(f_ref).numpy()).max()) <= ATOL
        units = [0, sae.cfg.d_sae // 2, sae.cfg.d_sae - 1]
        onehot = np.zeros((len(units), sae.cfg.d_sae), np.float32)
        onehot[range(len(units)), units] = 1
        _, rows = dec.run(None, {"f": onehot})
        ref_rows = (sae.W_dec[units] / sae.input_scale).numpy()      # the rows steering adds (interventions._dec_rows)
        assert np.array_equal(rows, ref_rows)


def _edge_cases() -> list[str]:
    rng = np.random.default_rng(0)
    dna = ["".join(rng.choice(list("ACGT"), n)) for n in (1, 7, 60, 200)]
    import base64
    b64 = [base64.b64encode(rng.bytes(n)).decode() for n in (1, 2, 3, 40, 120)]
    return [
        "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "\r\n", "a  b", "a\u00a0b", "   leading", "trailing   ",
        "שלום עולם, מה שלומך?", "עִבְרִית עם ניקוד", "مرحبا بالعالم", "العَرَبِيَّة ١٢٣", "السلام عليكم 2024",
        "中文字符测试", "日本語のテキスト、カタカナ", "한국어 텍스트", "混合 mixed 文本 text",
        "😀", "👍🏽", "👨‍👩‍👧‍👦 family", "🇫🇷🇯🇵", "emoji😀inside", "❤️‍🔥",
        "x = 1\n    return x\n", "def f(a, b):\n\treturn a+b", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
        "\u200b\u200c\u200d", "e\u0301", "\ufeffBOM", "\U0001d54f\U0001d550", "a" * 300, "1,2,3,4,5,6,7,8,9,10",
        "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", '{"a": [1, 2.5e-3, null]}', "Ünïcödé façade naïve",
    ] + dna + b64


def _held_out_strings(smoke_tokens, tok, n: int = 10_500) -> list[str]:
    """Windows of held-out rows decoded to text (random starts and lengths, seeded)."""
    rng = np.random.default_rng(0)
    val = smoke_tokens.val
    out = []
    while len(out) < n:
        r = int(rng.integers(len(val)))
        a = int(rng.integers(1, val.shape[1]))
        b = min(val.shape[1], a + int(rng.integers(1, 40)))
        s = decode(tok, val[r, a:b].tolist())
        out.append(s)
    return out


def test_js_tokenizer_matches_python(smoke_tokens, smoke_tokenizer, tmp_path):
    """@huggingface/tokenizers (node, the same build and tokenizer.json the page uses) = Python's ids."""
    _need_js()
    strings = _held_out_strings(smoke_tokens, smoke_tokenizer) + _edge_cases()
    assert len(strings) >= 10_000
    folder = smoke_tokenizer.name_or_path
    (tmp_path / "in.json").write_text(json.dumps(strings), encoding="utf-8")
    subprocess.run(["node", str(live.JS_DIR / "tokenize.cjs"), folder, str(tmp_path / "in.json"),
                    str(tmp_path / "out.json")], check=True, timeout=600, cwd=live.JS_DIR)
    got = json.loads((tmp_path / "out.json").read_text())["ids"]
    want = [encode(smoke_tokenizer, s) for s in strings]
    bad = [(s, g, w) for s, g, w in zip(strings, got, want) if g != w]
    assert not bad, f"{len(bad)} of {len(strings)} strings tokenize differently, e.g. {bad[:3]}"


def test_missing_libraries_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(live, "ORT_DIST", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="make atlas-js.*--no-live"):
        live.check_libraries()


def test_live_page_requests_nothing_outside_the_folder():
    """live.js names no URL but its own folder's files (and the runtime's data: loader)."""
    import re
    text = (live.ASSETS / "live.js").read_text(encoding="utf-8")
    assert re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I) == []
    paths = re.findall(r"'(live/[^']*\.js)'", text)
    assert paths and all(not re.match(r"^(?:[a-z]+:|/)", p) for p in paths)
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
