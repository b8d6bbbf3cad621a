"""App mode for a class: the steering widget served by Voila (``python -m mono_utils app steering``),
no code shown, a real slider drag changes the text; nothing requested off localhost."""
import re


def test_steering_app_in_voila(voila_page):
    p = voila_page("steering")
    p.widget("mono-steer-slider-main", timeout=300_000)
    p.wait_for_text("mono-steer-output", r"steered:", timeout=120)
    shown = {sel: p.page.locator(sel).count() for sel in (".jp-InputArea-editor", ".cm-editor", ".CodeMirror",
                                                          ".jp-InputPrompt")}
    assert not any(shown.values()), f"the app shows code areas {shown}: Voila should strip sources"
    assert "steering_app(" not in p.page.content(), "the app's source code leaked into the page"
    errors = p.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
    assert errors == 0, "the app shows error output"
    p.wait_for_plots(1, "mono-steer-plot")
    before_text, before_plot = p.text("mono-steer-output"), p.plot_signature("mono-steer-plot")
    readout = p.drag_slider("mono-steer-slider-main", fraction=0.05)
    after = p.wait_for_text("mono-steer-output", re.escape(readout), timeout=60)
    assert after != before_text
    p.wait_for_change(lambda: p.plot_signature("mono-steer-plot"), before_plot, timeout=30)
    # the bars carry their colours in Voila too (they once rendered black there)
    fills = p.page.evaluate("() => Array.from(document.querySelectorAll('.mono-steer-plot .bars path'))"
                            ".map(e => getComputedStyle(e).fill)")
    assert fills and set(fills) <= {"rgb(42, 157, 143)", "rgb(231, 111, 81)"}, fills
    p.screenshot("app_steering")
    # Voila's page template links fontawesome webfonts it does not ship; nothing else may leave
    external = [u for u in p.requests.external if "fontawesome" not in u.lower()]
    assert not external, f"requests left localhost: {external[:5]}"
