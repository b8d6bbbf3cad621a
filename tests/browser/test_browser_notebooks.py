"""Every widget notebook as a person meets it: JupyterLab in headless Chromium, Run All, no error
output, each widget used once, plots / circuitsvis rendered, nothing requested off localhost."""
import re
import time

from harness import need_notebook


def test_00_model_runs_and_plots(lab_page):
    need_notebook("00_model.ipynb")
    p = lab_page.open("00_model.ipynb")
    p.run_all_ok(timeout=600)
    p.wait_for_plots(3)
    p.assert_circuitsvis_rendered()
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


def test_02_browser_search_and_rating_form(lab_page):
    from harness import RATER, REPO
    need_notebook("02_neurons_vs_features.ipynb")
    ratings = REPO / "data" / "ratings" / f"{RATER}.csv"
    existed = ratings.exists()
    rows_before = len(ratings.read_text().splitlines()) if existed else 0
    p = lab_page.open("02_neurons_vs_features.ipynb")
    try:
        p.run_all_ok(timeout=600)
        p.wait_for_plots(1)
        p.assert_circuitsvis_rendered()
        page = p.page
        # feature browser: search a token, open a dashboard from the results
        box = page.get_by_placeholder("a token, e.g. ' def'")
        box.scroll_into_view_if_needed()
        box.fill(" the")
        page.get_by_role("button", name="search token").click()
        hit = page.locator("button[title^='open feature']").first
        hit.wait_for(timeout=60_000)
        unit = re.search(r"open feature (\d+)", hit.get_attribute("title")).group(1)
        hit.click()
        page.get_by_text(re.compile(rf"^feature {unit} of \d+")).first.wait_for(timeout=60_000)
        p.screenshot("02_browser")
        # rating form: rate one unit and see it saved
        slider = p.slider_by_label("confidence")
        value = p.drag_slider(slider, 0.99)
        assert value not in ("", "0"), f"the confidence slider did not move ({value!r})"
        page.get_by_role("button", name="save & next").click()
        page.get_by_text(re.compile(r"saved unit \d+ \(total \d+\)")).first.wait_for(timeout=30_000)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (ratings.exists() and len(ratings.read_text().splitlines()) > rows_before):
            time.sleep(0.2)
        assert ratings.exists() and len(ratings.read_text().splitlines()) > rows_before, "the rating was not saved"
        p.screenshot("02_rating")
        p.assert_offline()
    finally:
        if not existed:
            ratings.unlink(missing_ok=True)


def test_04_universality_open_a_matched_pair(lab_page):
    need_notebook("04_universality.ipynb")
    p = lab_page.open("04_universality.ipynb")
    p.run_all_ok(timeout=600)
    p.wait_for_plots(1)
    p.assert_circuitsvis_rendered()
    browser = p.page.locator(".widget-vbox:has(> .widget-hbox .widget-slider:has(.widget-label:text-is('rank')))").first
    browser.wait_for(timeout=60_000)
    before = browser.inner_text()
    p.drag_slider(p.slider_by_label("rank"), 0.5)
    after = p.wait_for_change(lambda: browser.inner_text(), before, timeout=60, settle=0.5)
    assert re.search(r"\bB/\S*\s*feature|\bB/1", after), "the pair view does not show a B feature"
    p.screenshot("04_pair")
    p.assert_offline()
