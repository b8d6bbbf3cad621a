"""The steering widget driven from code (no browser): sliders change the output, extremes are safe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_utils.core.model import ModelConfig, build_model
from mono_utils.core.sae import SAEConfig, SparseAutoencoder
from mono_utils.core.tokenizer import EOT, train_tokenizer
from mono_utils.steering.catalog import feature_catalog

TEXTS = ["1,2,3,4,5,6,7,8,9,10 the cat sat on the mat. " * 3, "ACGTTGCAACGTAGGCTTAACG " * 4,
         "שלום עולם מה שלומך " * 3, "def f(x):\n    return x + 1\n" * 3]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tok = train_tokenizer(TEXTS * 5, 300, tmp_path_factory.mktemp("tok"))
    lm = build_model(ModelConfig(d_vocab=len(tok), d_model=32, n_heads=2, d_mlp=64, n_ctx=24, seed=3), tokenizer=tok)
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "head" in n or "tok_embed" in n:
                p.mul_(4)
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=48, seed=1))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    rng = np.random.default_rng(0)
    toks = rng.integers(1, len(tok), size=(8, 24)).astype(np.uint16)
    toks[:, 0] = tok.convert_tokens_to_ids(EOT)
    sub = rng.integers(0, 2, size=toks.shape).astype(np.uint8)
    cat = feature_catalog(lm, sae, toks, sub, ["dna", "hebrew"], tok, progress=False)
    return lm, tok, sae, cat


@pytest.fixture()
def widget(parts):
    from mono_utils.steering.widget import SteeringWidget
    lm, tok, sae, cat = parts
    return SteeringWidget(lm, tok, sae, cat, prompt="1,2,3", features=[int(cat.search("")[0])], debounce_s=0)


def test_slider_changes_output(widget):
    f = next(iter(widget.sliders))
    s = widget.sliders[f]
    assert "mono-steer-slider" in s._dom_classes and "mono-steer-slider-main" in s._dom_classes
    assert "mono-steer-output" in widget.steered_html._dom_classes
    assert "mono-steer-plot" in widget.fig._dom_classes
    before, renders = widget.steered_html.value, widget.n_renders
    bars = tuple(tuple(d.x) for d in widget.fig.data)
    s.value = s.max                      # as a drag would (observer, no debounce in tests)
    assert widget.n_renders == renders + 1 and widget.last_error is None
    assert widget.steered_html.value != before
    assert f"{s.value:.2f}" in widget.steered_html.value   # output names the slider's readout
    assert tuple(tuple(d.x) for d in widget.fig.data) != bars
    # up and down bars are separate traces with one fixed colour each (renders the same everywhere)
    up, down = widget.fig.data
    assert all(v >= 0 for v in up.x) and all(v < 0 for v in down.x) and len(up.x) + len(down.x) > 0
    assert isinstance(up.marker.color, str) and isinstance(down.marker.color, str)
    widget.set_value(f, 0.0)
    assert f"clamp {0.0:.2f}" in widget.steered_html.value
    # baseline does not depend on the slider
    base = widget.baseline_html.value
    widget.set_value(f, s.min)
    assert widget.baseline_html.value == base


def test_every_control_at_its_extremes(widget):
    f = next(iter(widget.sliders))
    controls = [widget.sliders[f], widget.temperature, widget.top_k, widget.top_p, widget.seed,
                widget.length, widget.range_k]
    for c in controls:
        for v in (c.min, c.max, c.min):
            c.value = v
            assert widget.last_error is None, (c.description, v, widget.last_error)
    for m in widget.mode.options:
        widget.mode.value = m
        for w in widget.where.options:
            widget.where.value = w
            widget.keep_error.value = not widget.keep_error.value
            assert widget.last_error is None
    widget.search.value = "zzzz-no-match"
    assert widget.picker.options == ()
    widget.search.value = str(f)
    assert widget.picker.value == f


def test_bad_input_shows_message_not_exception(widget, parts):
    widget.prompt.value = ""
    assert "prompt is empty" in widget.status.value and widget.last_error
    widget.prompt.value = "1,2,3,4,5,6,7,8,9,10 " * 30
    assert widget.last_error is None and "truncated" in widget.status.value
    widget.prompt.value = "∮ 🦀 ☃"
    assert widget.last_error is None
    with pytest.raises(ValueError, match="out of range"):
        widget.add_feature(10_000)
    with pytest.raises(ValueError, match="finite"):
        widget.set_value(next(iter(widget.sliders)), float("nan"))


def test_add_remove_features_and_render_time(widget, parts):
    cat = parts[3]
    other = [i for i in cat.search("") if i not in widget.sliders][0]
    widget.picker.value = other
    widget.add_btn.click()
    assert other in widget.sliders and len(widget.slider_box.children) == 2
    assert "mono-steer-slider-main" not in widget.sliders[other]._dom_classes
    widget.set_value(other, -1.0)
    assert f"#{other} clamp -1.00" in widget.steered_html.value
    widget.remove_feature(other)
    assert other not in widget.sliders
    assert widget.last_ms < 2000


def test_next_token_figure_shows_the_most_likely_tokens(parts):
    from mono_utils.features.dashboards import readable_tokens
    from mono_utils.steering.interventions import generate
    from mono_utils.steering.widget import next_token_figure
    lm, tok, sae, _ = parts
    logits = generate(lm, tok, sae, "1,2,3", max_new_tokens=1, seed=0).first_logits
    fig = next_token_figure(logits, tok, k=5)
    bar = fig.data[0]
    p = torch.softmax(logits.float(), -1)
    assert list(bar.y) == pytest.approx(p.topk(5).values.tolist())
    # each token as the atlas shows it: a byte that starts no whole character as ‹xx›, never �
    assert list(bar.x) == [repr(readable_tokens(tok, [i])[0]) for i in p.topk(5).indices.tolist()]
    assert not any("\ufffd" in x for x in bar.x)
    assert all(a >= b for a, b in zip(bar.y, bar.y[1:]))
