"""Steering mechanics on a tiny model with its own tiny tokenizer and a random SAE."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mono_utils.core.model import HOOK_MLP_POST, ModelConfig, build_model, sample, set_model_folder
from mono_utils.core.sae import SAEConfig, SparseAutoencoder
from mono_utils.core.tokenizer import EOT, encode, train_tokenizer
from mono_utils.steering.catalog import feature_catalog, measure_effect, proxy_token_share
from mono_utils.steering.interventions import FastLM, Intervention, edit_acts, generate, next_token_shift, steered

TEXTS = ["1,2,3,4,5,6,7,8,9,10 the cat sat on the mat. " * 3,
         "ACGTTGCAACGTAGGCTTAACG " * 4, "QUJDRGVmZ2hpams0NTY3+/abXyZ09 " * 3,
         "שלום עולם מה שלומך " * 3, "مرحبا بالعالم كيف حالك " * 3, "def f(x):\n    return x + 1\n" * 3]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(TEXTS * 5, 320, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def lm(tok):
    torch.manual_seed(0)
    m = build_model(ModelConfig(d_vocab=len(tok), d_model=32, n_heads=2, d_mlp=64, n_ctx=24, seed=3), tokenizer=tok)
    with torch.no_grad():       # make the random model less flat so sampling is not uniform
        for n, p in m.named_parameters():
            if "head" in n or "tok_embed" in n:
                p.mul_(4)
    m.eval()
    return m


@pytest.fixture(scope="module")
def sae():
    s = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96, seed=1))
    with torch.no_grad():
        s.b_enc.fill_(0.05)
        s.b_enc[7] = -1e4       # feature 7 never fires
    return s


def ids_of(tok, text):
    return torch.tensor([[tok.convert_tokens_to_ids(EOT)] + encode(tok, text)])


def logits_with(lm, sae, tokens, ivs, keep_error=True):
    with torch.no_grad(), steered(lm, sae, ivs, keep_error):
        return lm(tokens)


def test_fastlm_matches_model(lm, tok):
    fast = FastLM(lm)
    assert fast.check(ids_of(tok, "1,2,3,4,5 the cat")) < 1e-4


def test_clamp_to_current_value_changes_nothing(lm, tok, sae):
    x = ids_of(tok, "1,2,3,4,5 the cat sat")
    from mono_utils.core.model import mlp_post
    with torch.no_grad():
        f = sae.encode(mlp_post(lm, x))[0]
    pos = 4
    feat = int(f[pos].argmax())
    assert f[pos, feat] > 0
    clean = lm(x)
    same = logits_with(lm, sae, x, [Intervention(feat, "clamp", float(f[pos, feat]), (pos,))])
    torch.testing.assert_close(same, clean, atol=1e-5, rtol=0)
    moved = logits_with(lm, sae, x, [Intervention(feat, "clamp", float(f[pos, feat]) + 5, (pos,))])
    assert (moved[0, pos] - clean[0, pos]).abs().max() > 1e-3
    assert torch.equal(moved[0, :pos], clean[0, :pos])   # earlier positions untouched
    # plain replacement drops the SAE's error: it changes logits even at the current value
    repl = logits_with(lm, sae, x, [Intervention(feat, "clamp", float(f[pos, feat]), (pos,))], keep_error=False)
    assert (repl[0, pos] - clean[0, pos]).abs().max() > 1e-4


def test_ablating_inactive_feature_changes_nothing(lm, tok, sae):
    x = ids_of(tok, "ACGTTGCA the mat")
    clean = lm(x)
    out = logits_with(lm, sae, x, [Intervention(7, "ablate")])
    torch.testing.assert_close(out, clean, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["clamp", "add"])
def test_steering_moves_logits_along_logit_weights(lm, tok, sae, mode):
    from mono_utils.core.model import W_U, W_out, mlp_post
    x = ids_of(tok, "1,2,3 the cat")
    feat = 11
    lw = (sae.W_dec_raw[feat] @ W_out(lm) * lm.ln_final.w if hasattr(lm, "ln_final") and hasattr(lm.ln_final, "w")
          else sae.W_dec_raw[feat] @ W_out(lm)) @ W_U(lm)
    lw = lw - lw.mean()
    clean = lm(x)[0, -1]
    with torch.no_grad():
        current = float(sae.encode(mlp_post(lm, x))[0, -1, feat])
    for sign in (1, -1):
        val = sign * 0.5 if mode == "add" else current + sign * 0.5
        d = logits_with(lm, sae, x, [Intervention(feat, mode, val)])[0, -1] - clean
        d = d - d.mean()
        corr = float(torch.corrcoef(torch.stack([d, lw]))[0, 1])
        assert sign * corr > 0.8, (mode, sign, corr)


def test_hooks_removed_when_generation_raises(lm, tok, sae):
    x = ids_of(tok, "the cat")
    clean = lm(x)

    class Boom(Exception):
        pass

    class Bad(torch.nn.Module):
        cfg = sae.cfg
        W_dec_raw = sae.W_dec_raw
        calls = 0

        def encode(self, a):
            Bad.calls += 1
            if Bad.calls > 2:
                raise Boom("encode failed")
            return sae.encode(a)

    with pytest.raises(Boom):
        generate(lm, tok, Bad(), "the cat", [Intervention(3, "clamp", 4.0)], max_new_tokens=5, backend="hooks")
    hp = lm.blocks[0].mlp.hook_post
    assert not hp._forward_hooks
    torch.testing.assert_close(lm(x), clean)
    with pytest.raises(Boom):
        with steered(lm, sae, [Intervention(3, "clamp", 4.0)]):
            raise Boom("user code failed")
    assert not hp._forward_hooks


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_same_seed_no_intervention_reproduces_model_sample(lm, tok, sae, seed):
    ref = sample(lm, tok, "1,2,3", max_new_tokens=12, seed=seed)
    got = generate(lm, tok, sae, "1,2,3", (), max_new_tokens=12, seed=seed)
    assert got.text == ref
    greedy_ref = sample(lm, tok, "the cat", max_new_tokens=8, temperature=0, seed=seed)
    assert generate(lm, tok, None, "the cat", max_new_tokens=8, temperature=0, seed=seed).text == greedy_ref


def test_fast_and_hooks_backends_agree(lm, tok, sae):
    ivs = [Intervention(5, "clamp", 3.0), Intervention(9, "add", -1.0, (2, 3, 4))]
    kw = dict(max_new_tokens=10, seed=4, track=[5, 9])
    a = generate(lm, tok, sae, "1,2,3", ivs, backend="fast", **kw)
    b = generate(lm, tok, sae, "1,2,3", ivs, backend="hooks", **kw)
    assert a.new_ids == b.new_ids
    np.testing.assert_allclose(a.feature_acts, b.feature_acts, atol=1e-4)
    torch.testing.assert_close(a.first_logits, b.first_logits, atol=1e-4, rtol=0)
    assert a.feature_acts.shape == (len(a.prompt_ids) + 10 - 1, 2)


def test_intervention_changes_text_and_next_token_view(lm, tok, sae):
    base = generate(lm, tok, sae, "1,2,3", (), max_new_tokens=12, seed=0)
    st = generate(lm, tok, sae, "1,2,3", [Intervention(11, "clamp", 40.0)], max_new_tokens=12, seed=0)
    assert st.new_ids != base.new_ids
    sh = next_token_shift(base.first_logits, st.first_logits, tok, k=5)
    assert len(sh["up"]) == 5 and all(r["delta"] > 0 for r in sh["up"])
    assert all(r["delta"] < 0 for r in sh["down"]) and sh["kl"] > 0
    assert abs(sum(r["p_steered"] - r["p_base"] - r["delta"] for r in sh["up"])) < 1e-5


def test_edit_acts_modes(sae):
    x = torch.rand(1, 3, 64)
    f = sae.encode(x)
    out, _ = edit_acts(x, sae, [Intervention(2, "add", 1.5)])
    torch.testing.assert_close(out, x + 1.5 * sae.W_dec_raw[2], atol=1e-5, rtol=0)
    out, _ = edit_acts(x, sae, [Intervention(2, "ablate")])
    torch.testing.assert_close(out, x - f[..., 2:3] * sae.W_dec_raw[2], atol=1e-5, rtol=0)
    out, _ = edit_acts(x, sae, [Intervention(2, "clamp", 0.0, (1,))], keep_error=False)
    f2 = f.clone()
    f2[0, 1, 2] = 0
    torch.testing.assert_close(out[0, 1], sae.decode(f2)[0, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, [0, 2]], x[0, [0, 2]])


# ---------------------------------------------------------------- bad input
def test_bad_inputs(lm, tok, sae):
    with pytest.raises(ValueError, match="out of range.*0..95"):
        generate(lm, tok, sae, "1,2", [Intervention(96, "clamp", 1.0)], max_new_tokens=3)
    with pytest.raises(ValueError, match="out of range"):
        generate(lm, tok, sae, "1,2", [Intervention(-1, "clamp", 1.0)], max_new_tokens=3)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            Intervention(3, "clamp", bad)
    with pytest.raises(ValueError, match="unknown steering mode"):
        Intervention(3, "pin", 1.0)
    with pytest.raises(ValueError, match="prompt is empty.*allow_empty"):
        generate(lm, tok, sae, "", max_new_tokens=3)
    assert len(generate(lm, tok, sae, "", max_new_tokens=3, allow_empty=True).new_ids) == 3
    with pytest.raises(ValueError, match="at most 22"):
        generate(lm, tok, sae, "1,2", max_new_tokens=23)
    long = generate(lm, tok, sae, "1,2,3,4,5,6,7,8,9,10 " * 20, max_new_tokens=6)
    assert len(long.prompt_ids) + 6 <= 24 and "truncated" in long.notes[0]
    odd = "∮ 🦀 \u0000 ☃ Ω"
    g = generate(lm, tok, sae, odd, max_new_tokens=4)
    assert tok.decode(g.prompt_ids[1:]) == odd and len(g.new_ids) == 4
    with pytest.raises(ValueError, match="top_p"):
        generate(lm, tok, sae, "1", max_new_tokens=2, top_p=0)
    with pytest.raises(ValueError, match="finite"):
        generate(lm, tok, sae, "1", max_new_tokens=2, temperature=math.nan)


# ---------------------------------------------------------------- proxies, catalog, effect
@pytest.mark.parametrize("proxy,good,bad", [
    ("dna", "ACGTTGCAACGTAGGCTTAACG\nGGCATTACGA", "the cat sat on the mat, CAT"),
    ("base64", "QUJDRGVmZ2hpams0NTY3+/abXyZ09", "the cat sat on the mat"),
    ("hebrew", "שלום עולם מה שלומך", "hello world"),
    ("arabic", "مرحبا بالعالم كيف حالك", "שלום עולם"),
])
def test_proxies(tok, proxy, good, bad):
    assert proxy_token_share(tok, encode(tok, good), proxy) > 0.8
    assert proxy_token_share(tok, encode(tok, bad), proxy) < 0.2
    with pytest.raises(ValueError, match="unknown proxy"):
        proxy_token_share(tok, [1], "klingon")


def test_catalog_matches_brute_force(lm, tok, sae):
    from mono_utils.core.model import mlp_post
    rng = np.random.default_rng(0)
    toks = rng.integers(1, len(tok), size=(6, 24)).astype(np.uint16)
    toks[:, 0] = tok.convert_tokens_to_ids(EOT)
    sub = rng.integers(0, 3, size=toks.shape).astype(np.uint8)
    cat = feature_catalog(lm, sae, toks, sub, ["a", "b", "c"], tok, batch_rows=4, top=4, progress=False)
    with torch.no_grad():
        f = sae.encode(mlp_post(lm, torch.from_numpy(toks.astype(np.int64))))[:, 1:].reshape(-1, 96)
    np.testing.assert_allclose(cat.max_act, f.max(0).values.numpy(), rtol=1e-5)
    lab = sub[:, 1:].reshape(-1)
    np.testing.assert_allclose(cat.sub_mass[:, 1], f[torch.from_numpy(lab == 1)].sum(0).numpy(), rtol=1e-4)
    assert cat.max_act[7] == 0 and 7 not in cat.search("")
    assert cat.search("12")[0] == 12 and cat.search("#12") == [12]
    assert 0 <= cat.domain_feature("b") < 96
    with pytest.raises(ValueError, match="unknown subdomain"):
        cat.domain_feature("zz")


def test_measure_effect(lm, tok, sae):
    r = measure_effect(lm, tok, sae, 11, 30.0, "dna", prompt="1,2,3", seeds=range(2), n_tokens=8)
    assert r["seeds"] == 2 and 0 <= r["baseline_share"] <= 1 and 0 <= r["steered_share"] <= 1
    e = 1 / 16
    assert r["ratio"] == pytest.approx((r["steered_share"] + e) / (r["baseline_share"] + e))


def test_cached_catalog_equals_direct_then_loads(lm, tok, sae, tmp_path, monkeypatch):
    from dataclasses import fields

    from mono_utils.steering import catalog as sc
    from mono_utils.store.artifacts import ArtifactStore
    set_model_folder(lm, tmp_path / "model-x1")
    monkeypatch.setattr(sae, "folder", tmp_path / "sae-x1", raising=False)
    rng = np.random.default_rng(1)
    toks = rng.integers(1, len(tok), size=(6, 24)).astype(np.uint16)
    sub = rng.integers(0, 3, size=toks.shape).astype(np.uint8)
    args = (lm, sae, toks, sub, ["a", "b", "c"], tok)
    store = ArtifactStore(tmp_path / "art")
    direct = feature_catalog(*args, top=4, progress=False)
    cached = sc.cached_feature_catalog(*args, store, top=4, progress=False)
    monkeypatch.setattr(sc, "feature_catalog", lambda *a, **k: pytest.fail("recomputed instead of loaded"))
    loaded = sc.cached_feature_catalog(*args, store, top=4, progress=False)
    for c in (cached, loaded):
        for f in fields(direct):
            a, b = getattr(direct, f.name), getattr(c, f.name)
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b, f.name
    assert loaded.label(3) == direct.label(3) and loaded.search("") == direct.search("")
    monkeypatch.undo()
    toks2 = toks.copy()
    toks2[0, 5] = toks2[0, 5] % (len(tok) - 2) + 1                # other token rows: another entry
    set_model_folder(lm, tmp_path / "model-x1")
    monkeypatch.setattr(sae, "folder", tmp_path / "sae-x1", raising=False)
    sc.cached_feature_catalog(lm, sae, toks2, sub, ["a", "b", "c"], tok, store, top=4, progress=False)
    monkeypatch.setattr(sae, "folder", tmp_path / "sae-x2", raising=False)   # another SAE: another entry
    sc.cached_feature_catalog(*args, store, top=4, progress=False)
    assert len([p for p in (store.root / "result").iterdir() if not p.name.startswith(".")]) == 3
