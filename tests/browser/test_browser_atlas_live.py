"""The live atlas in real headless Chromium from file://: the page's own numbers (onnxruntime-web,
@huggingface/tokenizers) equal the Python side's on typed text, greedy steering equals notebook 06's
``generate``, user text is never HTML, and no request leaves the folder (any that does is aborted)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from harness import SCREENSHOTS, require_browser

from mono_utils.atlas import live
from mono_utils.core.model import mlp_post
from mono_utils.core.tokenizer import EOT, encode
from mono_utils.pipeline.indexes import get_index
from mono_utils.pipeline.models import get_model, get_tokenizer
from mono_utils.pipeline.saes import get_sae
from mono_utils.steering.interventions import Intervention, generate

ATOL = 1e-4
PROMPTS = [  # 20 prompts: the corpus's kinds of text, scripts, edge cases
    "The quick brown fox jumps over the lazy dog.", "1,2,3,4,5,6,7,8,9,10", "def add(a, b):\n    return a + b\n",
    "GET /index.html HTTP/1.1\r\nHost: example.org\r\n", '{"name": "Ada", "age": 36, "tags": ["x", "y"]}',
    "ACGTTGCAACGTAGCTAGCTAGGCTA", "aGVsbG8gd29ybGQhIFRoaXMgaXMgYmFzZTY0Lg==", "שלום עולם, מה שלומך היום?",
    "مرحبا بالعالم، كيف حالك؟", "中文字符测试，日本語のテキスト", "Emoji 😀👍🏽 and flags 🇫🇷", "   \n\n\t  spaced   out  ",
    "Calories 230, Total Fat 8g, Sodium 160mg", "12 + 35 = 47; 8 * 9 = 72", "#include <vector>\ntemplate <typename T>",
    "Le renard brun saute par-dessus le chien.", "<p>Hello <b>world</b></p>", "x", "Ünïcödé façade naïve café",
    "The model reads one token at a time and predicts the next one from what it has seen so far, " * 3,
]
STEER_PROMPTS = ["1,2,3,4,5,6,7,8,9,10", "The weather today is", "def main():", "ACGT",
                 "שלום", "{\"key\":", "Once upon a time", "GET /"]
XSS = '<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">&amp; <b>bold</b>'


@pytest.fixture(scope="module")
def smoke_live(smoke_store, smoke_preset):
    require_browser()
    try:
        live.check_libraries()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    model = get_model(smoke_preset, smoke_store, which="A", progress=False)
    tok = get_tokenizer(smoke_preset, smoke_store)
    sae = get_sae(smoke_preset, smoke_store, which="A", progress=False)
    index = get_index(smoke_preset, smoke_store, which="A", sae=sae, model=model, progress=False)
    return model, tok, sae, index


@pytest.fixture(scope="module")
def live_atlas(smoke_live, smoke_preset, smoke_store, tmp_path_factory):
    """The atlas of A/1 and A's neurons, live (analyses not built are left out: this test needs none)."""
    from mono_utils.atlas.site import build_atlas
    out = tmp_path_factory.mktemp("atlas-live") / "atlas"
    rep = build_atlas(smoke_preset, out, store=smoke_store, progress=False, build_missing=False)
    assert rep["live"]["sets"] == ["A1", "AN"]
    return out.resolve()


def _guarded_page(folder: Path, browser_context):
    """A page whose every request outside ``folder`` is aborted and recorded; checked when it closes."""
    pg = browser_context.new_page()
    pg.outside, pg.errors, pg.requests = [], [], []

    def guard(route):
        url = route.request.url
        pg.requests.append(url)
        if url.startswith("file://") and Path(unquote(urlparse(url).path)).resolve().is_relative_to(folder):
            route.continue_()
        elif url.startswith("data:"):
            route.continue_()             # the runtime's loader module, from a string in live/ort-wasm.js
        else:
            pg.outside.append(url)
            route.abort()
    pg.route("**/*", guard)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    yield pg
    pg.close()
    assert not pg.outside, f"requests outside the atlas folder (aborted): {pg.outside[:5]}"
    assert not pg.errors, pg.errors[:5]


@pytest.fixture()
def page(live_atlas, browser_context):
    """A page of the A-only atlas whose every request outside its folder is aborted and recorded."""
    yield from _guarded_page(live_atlas, browser_context)


def _ready(page, atlas: Path, hash_: str = ""):
    page.goto(atlas.joinpath("index.html").as_uri() + hash_)
    page.wait_for_function("() => window.ATLAS && ATLAS.live", timeout=15_000)
    page.evaluate("() => ATLAS.live.init().then(() => true)")


def test_typed_text_matches_python(page, live_atlas, smoke_live):
    """20 prompts: the page's token ids = Python's, its logits and A/1's and the neurons' activations
    within 1e-4 of the bridge's and the SAE's."""
    model, tok, sae, _ = smoke_live
    _ready(page, live_atlas)
    bos = tok.convert_tokens_to_ids(EOT)
    n_ctx = model.cfg.n_ctx
    worst = {"logits": 0.0, "features": 0.0, "neurons": 0.0}
    for text in PROMPTS:
        got = page.evaluate("""async ([text]) => {
            const L = ATLAS.live, r = await L.analyse(text, 'A1');
            const fw = await L.forward(r.ids), lg = await L.logits(fw.resid, fw.act.data);
            return {ids: r.ids, feats: Array.from(r.acts), acts: Array.from(fw.act.data), logits: Array.from(lg.data)};
        }""", [text])
        ids = ([bos] + encode(tok, text))[:n_ctx]
        assert got["ids"] == ids, text
        x = torch.tensor([ids])
        with torch.no_grad():
            ref_logits = model(x)[0].float().numpy()
            ref_act = mlp_post(model, x)[0]
            ref_f = sae.encode(ref_act).numpy()
        T = len(ids)
        worst["logits"] = max(worst["logits"], float(np.abs(np.array(got["logits"]).reshape(T, -1) - ref_logits).max()))
        worst["neurons"] = max(worst["neurons"], float(np.abs(np.array(got["acts"]).reshape(T, -1) - ref_act.numpy()).max()))
        worst["features"] = max(worst["features"], float(np.abs(np.array(got["feats"]).reshape(T, -1) - ref_f).max()))
    assert max(worst.values()) <= ATOL, worst
    # the panel: type, run, the tokens shown are the text's, a unit's shading is its activation
    unit = int(np.argmax(ref_f.max(0)))        # the strongest feature on the last prompt
    page.goto(live_atlas.joinpath("index.html").as_uri() + f"#/A1/{unit}")
    page.wait_for_selector("#live-text", timeout=30_000)
    page.fill("#live-text", PROMPTS[-1])
    page.click("#live-run")
    page.wait_for_selector("#live-out[data-done]", timeout=30_000)
    shown = page.evaluate("() => Array.from(document.querySelectorAll('#live-tokens bdi.ct')).map(b => parseFloat(b.dataset.act))")
    assert len(shown) == len(ids)
    assert np.abs(np.array(shown) - ref_f[:, unit]).max() <= ATOL
    assert page.locator("#live-detail a.unitlink").count() >= 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "atlas_live_text.png"))


HTML_SINKS = """(() => {      // count every use of an HTML-parsing sink (the atlas and the live page use none)
  window.__htmlSinks = [];
  const note = (name) => function (...a) { window.__htmlSinks.push([name, String(a[a.length - 1]).slice(0, 80)]); };
  for (const prop of ['innerHTML', 'outerHTML']) {
    const d = Object.getOwnPropertyDescriptor(Element.prototype, prop);
    Object.defineProperty(Element.prototype, prop, {configurable: true, get: d.get,
      set(v) { note(prop)(v); return d.set.call(this, v); }});
  }
  const ia = Element.prototype.insertAdjacentHTML;
  Element.prototype.insertAdjacentHTML = function (p, v) { note('insertAdjacentHTML')(v); return ia.call(this, p, v); };
  const dw = Document.prototype.write;
  Document.prototype.write = function (v) { note('document.write')(v); return dw.call(this, v); };
})();"""


def test_user_text_is_never_html(page, live_atlas):
    """Script and onerror markup typed into the panel shows as text, runs nothing, and never reaches an
    HTML-parsing sink (innerHTML, outerHTML, insertAdjacentHTML, document.write: all watched)."""
    page.add_init_script(HTML_SINKS)
    _ready(page, live_atlas)
    page.wait_for_selector("#live-text", timeout=30_000)
    page.fill("#live-text", XSS)
    page.click("#live-run")
    page.wait_for_selector("#live-out[data-done]", timeout=30_000)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("#live img, #live script, #live b").count() == 0
    shown = "".join(page.locator("#live-tokens bdi.ct").all_inner_texts()).replace("\u00b7", " ")
    assert shown == "<|endoftext|>" + XSS     # every character shown as typed: no markup, no entity decoded
    assert page.evaluate("() => window.__htmlSinks") == []


def test_greedy_steering_matches_notebook_06(page, live_atlas, smoke_live):
    """8 prompts x 4 features (clamp and add): the page's greedy tokens = ``generate(temperature=0)``.
    A step whose top two logits are within 1e-4 (a near-tie) may go either way: it is reported, and the
    comparison stops there for that pair; every pair must agree up to its first near-tie."""
    model, tok, sae, index = smoke_live
    _ready(page, live_atlas)
    live_units = index.live_units("feature")
    mx = np.asarray(index._u("feature").max)
    feats = [int(u) for u in live_units[np.argsort(-mx[live_units], kind="stable")][:4]]
    settings = [(feats[0], "clamp", float(2 * mx[feats[0]])), (feats[1], "clamp", float(mx[feats[1]])),
                (feats[2], "add", float(mx[feats[2]])), (feats[3], "add", float(-0.5 * mx[feats[3]]))]
    n_new = 24
    ties, compared = [], 0
    for prompt in STEER_PROMPTS:
        for unit, mode, value in settings:
            got = page.evaluate("""async (o) => await ATLAS.live.generate(o)""",
                                {"prompt": prompt, "set": "A1", "unit": unit, "mode": mode, "value": value,
                                 "n": n_new, "temperature": 0})
            ref = generate(model, tok, sae, prompt, [Intervention(unit, mode, value)], max_new_tokens=n_new,
                           temperature=0.0).new_ids
            first_tie = min([t["step"] for t in got["ties"]], default=n_new)
            diff = next((k for k in range(n_new) if got["ids"][k] != ref[k]), None)
            if got["ties"]:
                ties.append((prompt, unit, mode, first_tie, got["ties"][0]["gap"]))
            assert diff is None or diff >= first_tie, (
                f"{prompt!r} {mode} #{unit}={value:.3g}: token {diff} differs ({got['ids'][diff]} vs {ref[diff]}) "
                f"with no near-tie before it")
            compared += 1
    assert compared == 32
    print(f"near-ties (top two logits within 1e-4): {len(ties)} of {compared} generations: {ties}")
    # the panel: baseline and steered side by side
    unit = feats[0]
    page.goto(live_atlas.joinpath("index.html").as_uri() + f"#/A1/{unit}")
    page.wait_for_selector("#steer-run", timeout=30_000)
    page.click("#steer-run")
    page.wait_for_selector("#steer-out[data-done]", timeout=60_000)
    assert page.locator("#steer-base bdi.ct").count() == 20 and page.locator("#steer-steered bdi.ct").count() == 20
    page.screenshot(path=str(SCREENSHOTS / "atlas_live_steer.png"))


def test_no_live_writes_the_static_atlas(smoke_live, smoke_preset, smoke_store, tmp_path):
    from mono_utils.atlas.site import build_atlas
    out = tmp_path / "static"
    rep = build_atlas(smoke_preset, out, store=smoke_store, progress=False, build_missing=False, live=False)
    assert "live" not in rep and not (out / "live").exists()
    assert "live/live.js" not in (out / "index.html").read_text()


# ---------------------------------------------------------------- model B's sets are live too
@pytest.fixture(scope="module")
def live_atlas_b(smoke_live, smoke_preset, smoke_store, tmp_path_factory):
    """The atlas with B/1 (and B's neurons): model B exported beside model A, B's sets run on model B."""
    from mono_utils.atlas.site import build_atlas
    model_b = get_model(smoke_preset, smoke_store, which="B", progress=False)
    sae_b = get_sae(smoke_preset, smoke_store, which="B", progress=False)
    get_index(smoke_preset, smoke_store, which="B", sae=sae_b, model=model_b, progress=False)
    out = tmp_path_factory.mktemp("atlas-live-b") / "atlas"
    rep = build_atlas(smoke_preset, out, store=smoke_store, saes=("B/1",), progress=False, build_missing=False)
    assert rep["live"]["sets"] == ["A1", "AN", "B1", "BN"]
    assert "model-B-front.js" in rep["live"]["bytes"] and "model-B-back.js" in rep["live"]["bytes"]
    return out.resolve(), model_b, sae_b


@pytest.fixture()
def page_b(live_atlas_b, browser_context):
    yield from _guarded_page(live_atlas_b[0], browser_context)


def test_model_b_sets_run_on_model_b(page_b, live_atlas_b, smoke_live):
    """B/1 and B's neurons on typed text equal model B's and B/1's in torch (within 1e-4), not model A's;
    greedy steering with a B/1 feature equals notebook 06's ``generate`` on model B."""
    folder, model_b, sae_b = live_atlas_b
    model_a, tok, _, _ = smoke_live
    _ready(page_b, folder)
    bos = tok.convert_tokens_to_ids(EOT)
    worst, off_a = 0.0, 0.0
    for text in PROMPTS[:6]:
        got = page_b.evaluate("""async ([text]) => {
            const L = ATLAS.live, f = await L.analyse(text, 'B1'), n = await L.analyse(text, 'BN');
            return {ids: f.ids, feats: Array.from(f.acts), acts: Array.from(n.acts)};
        }""", [text])
        ids = ([bos] + encode(tok, text))[:model_b.cfg.n_ctx]
        assert got["ids"] == ids, text
        x = torch.tensor([ids])
        with torch.no_grad():
            ref_act = mlp_post(model_b, x)[0]
            ref_f = sae_b.encode(ref_act).numpy()
            act_a = mlp_post(model_a, x)[0].numpy()
        T = len(ids)
        got_act = np.array(got["acts"]).reshape(T, -1)
        worst = max(worst, float(np.abs(got_act - ref_act.numpy()).max()),
                    float(np.abs(np.array(got["feats"]).reshape(T, -1) - ref_f).max()))
        off_a = max(off_a, float(np.abs(got_act - act_a).max()))
    assert worst <= ATOL, worst
    assert off_a > 100 * ATOL, "B's neurons equal model A's: the page ran model A for a set of model B"
    unit = int(np.argmax(ref_f.max(0)))
    for prompt in STEER_PROMPTS[:2]:
        got = page_b.evaluate("""async (o) => await ATLAS.live.generate(o)""",
                              {"prompt": prompt, "set": "B1", "unit": unit, "mode": "clamp",
                               "value": float(2 * ref_f[:, unit].max() + 1), "n": 12, "temperature": 0})
        ref = generate(model_b, tok, sae_b, prompt, [Intervention(unit, "clamp", float(2 * ref_f[:, unit].max() + 1))],
                       max_new_tokens=12, temperature=0.0).new_ids
        first_tie = min([t["step"] for t in got["ties"]], default=12)
        diff = next((k for k in range(12) if got["ids"][k] != ref[k]), None)
        assert diff is None or diff >= first_tie, (prompt, diff, got["ids"], ref)
