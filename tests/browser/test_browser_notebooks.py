"""Every widget notebook as a person meets it: JupyterLab in headless Chromium, Run All, no error
output, each widget used once, plots / circuitsvis rendered, nothing requested off localhost."""
import re

from harness import need_notebook


def test_00_model_runs_and_plots(lab_page):
    need_notebook("00_model.ipynb")
    p = lab_page.open("00_model.ipynb")
    p.run_all_ok(timeout=600)
    p.wait_for_plots(3)
    p.screenshot("00_model")
    p.assert_offline()


def test_06_steering_slider_drag(lab_page):
    need_notebook("06_steering.ipynb")
    p = lab_page.open("06_steering.ipynb")
    p.run_all_ok(timeout=600)
    p.widget("mono-steer-slider-main")
    p.wait_for_text("mono-steer-output", r"steered:", timeout=60)
    p.wait_for_plots(1, "mono-steer-plot")
    before_text = p.text("mono-steer-output")
    before_plot = p.plot_signature("mono-steer-plot")
    readout = p.drag_slider("mono-steer-slider-main", fraction=0.05)
    assert readout, "the slider shows no readout"
    # the output settles on the value the slider shows (observers also fire for intermediate values)
    after = p.wait_for_text("mono-steer-output", re.escape(readout), timeout=60)
    assert after != before_text, "the steered text did not change after the drag"
    p.wait_for_change(lambda: p.plot_signature("mono-steer-plot"), before_plot, timeout=30)
    status = p.text("mono-steer-status")
    assert "⚠" not in status, f"the widget reported an error: {status}"
    p.screenshot("06_steering", "mono-steer-output")
    p.screenshot("06_steering-page")
    p.assert_offline()
